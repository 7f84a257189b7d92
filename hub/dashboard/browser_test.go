package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
	"github.com/hubproject/hub/hub/node"
)

const chromium = "/usr/bin/chromium"

// browser starts headless Chromium with networking limited to what the
// page asks for, and returns a tab context.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s is not installed (apt-get install -y chromium): the browser test needs it", chromium)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1100),
	)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first Do starts the browser; its life is bound to ctx, not to
	// the deadlines of later steps.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step runs browser actions with a deadline.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		err := chromedp.Do(sctx, actions...)
		if err == nil {
			return
		}
		// The page redraws its tables on every poll: a node found by the
		// query can be replaced before the click lands. Query again.
		if !strings.Contains(err.Error(), "Could not find node") || sctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		select {
		case <-sctx.Done():
			t.Fatalf("%s: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestDashboardInBrowser drives the dashboard in headless Chromium on a
// hub with an API token: the page loads without it and asks for it, works
// once it is pasted, shows a live event, replays a dead letter with its
// button (delivered), and disables and enables a subscription. With
// HUB_SCREENSHOT=path it saves a screenshot of the page there.
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t)
	orders, ordersURL := newReceiver(t, true)
	billing, billingURL := newReceiver(t, false)
	const token = "ops-token-0123456789abcdef"
	n := testHubWith(t, func(c *node.Config) {
		c.HTTP.Tokens = api.Tokens{{Name: "ops", Token: config.Secret(token), Scopes: []string{api.ScopeAdmin}}}
	},
		hook("orders-crm", ordersURL, "order.>"),
		hook("billing", billingURL, "order.paid", "invoice.*"),
		hub.Subscription{ID: "audit-log", Channel: "log", Events: []string{">"}})
	base := n.HTTPURL()

	publishAs(t, base, token, "order.created", "ord-1001")
	dead := waitDeadLetters(t, n, 1)[0]
	for i, typ := range []string{"order.paid", "invoice.sent", "user.signed_up"} {
		publishAs(t, base, token, typ, fmt.Sprintf("ev-%d", i))
	}
	waitFor(t, 20*time.Second, "billing deliveries", func() bool { return billing.got("ev-0") && billing.got("ev-1") })
	waitDeadLetters(t, n, 2)

	row := func(table, attr, v string) chromedp.CSS {
		return chromedp.CSS(fmt.Sprintf(`#%s tr[%s=%q]`, table, attr, v))
	}
	// Without a token the page loads and asks for one.
	step(t, ctx, "load the dashboard without a token",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#error`)))
	msg, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#error`)))
	if err != nil || !strings.Contains(msg, "401") || !strings.Contains(msg, "token") {
		t.Fatalf("error banner %q: %v", msg, err)
	}
	step(t, ctx, "paste the token",
		chromedp.SendKeys(chromedp.CSS(`#token`), token),
		chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)),
		chromedp.WaitVisible(row("dlq", "data-id", fmt.Sprint(dead.ID))),
		chromedp.WaitVisible(row("subs", "data-id", "billing")),
		chromedp.WaitVisible(row("channels", "data-channel", "webhook")),
		chromedp.WaitVisible(chromedp.CSS(`#consumers tbody tr td`)))

	publishAs(t, base, token, "order.shipped", "live-42")
	step(t, ctx, "the live event appears", chromedp.WaitVisible(row("events", "data-event-id", "live-42")))
	link, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(`#events tr[data-event-id="live-42"] a`), "href"))
	if err != nil || link.Value != "/v1/events/live-42" {
		t.Fatalf("trace link %+v: %v", link, err)
	}

	if path := os.Getenv("HUB_SCREENSHOT"); path != "" {
		// Two stats polls give rates; wait for the second one to be drawn.
		step(t, ctx, "rates", chromedp.WaitVisible(chromedp.CSS(`#intake`)))
		waitFor(t, 10*time.Second, "rates on the page", func() bool {
			s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#intake`)))
			return err == nil && !strings.Contains(s, "–")
		})
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", path)
	}

	// Replay the first dead letter once the receiver accepts it.
	orders.setFailing(false)
	step(t, ctx, "replay",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#dlq button[data-action="replay"][data-id="%d"]`, dead.ID))),
		chromedp.WaitNotPresent(row("dlq", "data-id", fmt.Sprint(dead.ID))))
	waitFor(t, 20*time.Second, "the replayed delivery", func() bool { return orders.got("ord-1001") })

	// Disable a subscription, then enable it again.
	step(t, ctx, "disable",
		chromedp.Click(chromedp.CSS(`#subs button[data-action="disable"][data-id="billing"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#subs button[data-action="enable"][data-id="billing"]`)))
	waitFor(t, 10*time.Second, "billing disabled", func() bool { return subDisabled(n.Subscriptions(), "billing") })
	step(t, ctx, "enable",
		chromedp.Click(chromedp.CSS(`#subs button[data-action="enable"][data-id="billing"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#subs button[data-action="disable"][data-id="billing"]`)))
	waitFor(t, 10*time.Second, "billing enabled", func() bool { return !subDisabled(n.Subscriptions(), "billing") })
}

func subDisabled(l []hub.Subscription, id string) bool {
	for _, s := range l {
		if s.ID == id {
			return s.Disabled
		}
	}
	return false
}

package chaos

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// freePorts returns n loopback ports free right now (cluster routes need
// fixed ports, known to every node before any starts).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// eventsLeader is the server name of the EVENTS stream's leader and
// whether every replica is current, as a node at url sees it.
func eventsLeader(ctx context.Context, url string) (leader string, current bool, msgs uint64, err error) {
	// A request that reaches no leader gets no answer: ask again soon.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nc, err := nats.Connect(url)
	if err != nil {
		return "", false, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", false, 0, err
	}
	st, err := js.Stream(ctx, hub.EventsStream)
	if err != nil {
		return "", false, 0, err
	}
	info := st.CachedInfo()
	if info.Cluster == nil {
		return "", false, info.State.Msgs, fmt.Errorf("EVENTS has no cluster info")
	}
	current = len(info.Cluster.Replicas) == 2
	for _, r := range info.Cluster.Replicas {
		current = current && r.Current && !r.Offline && r.Lag == 0
	}
	return info.Cluster.Leader, current, info.State.Msgs, nil
}

// TestChaosClusterNodeKill: three hubs form one JetStream cluster (streams
// R3); publishers, one per node with the other nodes to fail over to,
// publish 30,000 events for two webhook subscriptions. A third of the way
// through, the EVENTS stream's leader is SIGKILLed; two thirds of the way
// through it is restarted on its store and catches up. Nothing is lost.
func TestChaosClusterNodeKill(t *testing.T) {
	chaosOnly(t)
	const events, nodes = 30000, 3
	start := time.Now()
	ctx := ctxFor(t, 15*time.Minute)
	rcv := startReceiver(t)
	secret := webhook.GenerateSecret()
	subs := []string{"crm", "billing"}
	ports := freePorts(t, 2*nodes)
	var routes []string
	for i := range nodes {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[nodes+i]))
	}
	cfgs := make([]string, nodes)
	for i := range cfgs {
		cfgs[i] = WriteConfig(t, fmt.Sprintf(`
log: {level: info, format: json}
nats:
  name: hub-%d
  listen: "127.0.0.1:%d"
  store_dir: %q
  cluster: {name: chaos, listen: "127.0.0.1:%d", routes: [%s]}
http: {listen: "127.0.0.1:0"}
delivery:
  backoff: [100ms, 200ms, 500ms, 1s]
  max_attempts: 30
channels:
  webhook: {allow_cidrs: [127.0.0.0/8]}
subscriptions:
  - {id: crm, channel: webhook, events: [">"], url: %q, secret: %q}
  - {id: billing, channel: webhook, events: ["order.>"], url: %q, secret: %q}
`, i+1, ports[i], t.TempDir(), ports[nodes+i], strings.Join(routes, ", "), rcv.URL("crm"), secret, rcv.URL("billing"), secret))
	}
	// All three at once: each waits for a quorum of the others.
	procs := make([]*Hub, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			procs[i], errs[i] = StartHubErr(t, hubBin, cfgs[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		procs[i].Name = fmt.Sprintf("hub-%d", i+1)
	}
	l := &Ledger{Scenario: "cluster-node-kill", Published: events,
		Command: "HUB_CHAOS=1 go test -count=1 -v -run '^TestChaosClusterNodeKill$' ./chaos/"}
	l.Measure("cluster formed after", "%s", time.Since(start).Round(100*time.Millisecond))

	// One publisher per node; the other nodes are where it fails over to.
	pubs := make([]*Publisher, nodes)
	for k := range pubs {
		urls := []string{procs[k].NATSURL}
		for j := range procs {
			if j != k {
				urls = append(urls, procs[j].NATSURL)
			}
		}
		p, err := NewPublisher(strings.Join(urls, ","), nats.DontRandomize())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		pubs[k] = p
	}
	acked := func() int {
		n := 0
		for _, p := range pubs {
			n += p.Acked()
		}
		return n
	}
	pubErrs := make(chan error, nodes)
	for k, p := range pubs {
		var evs []publisher.Event
		for i := k; i < events; i += nodes {
			evs = append(evs, publisher.Event{Type: "order.created", ID: fmt.Sprintf("cl-%06d", i)})
		}
		go func() { pubErrs <- p.PublishAll(ctx, 6, evs) }()
	}

	if err := poll(ctx, 5*time.Millisecond, func() bool { return acked() >= events/3 }); err != nil {
		t.Fatal(err)
	}
	leader, _, _, err := eventsLeader(ctx, procs[0].NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	var victim int
	if _, err := fmt.Sscanf(leader, "hub-%d", &victim); err != nil || victim < 1 || victim > nodes {
		t.Fatalf("EVENTS leader %q", leader)
	}
	victim--
	n, got := acked(), rcv.Total()
	procs[victim].Kill(t)
	killed := time.Now()
	// How long the surviving nodes take to deliver again at full pace.
	resumed := make(chan time.Duration, 1)
	go func() {
		err := rcv.WaitFor(ctx, func(_ map[string]int, total int) bool { return total >= got+1000 })
		if err != nil {
			resumed <- -1
			return
		}
		resumed <- time.Since(killed)
	}()
	l.Fault("SIGKILL of %s, the EVENTS stream leader, with %d events acknowledged and %d webhook requests answered", leader, n, got)
	survivor := procs[(victim+1)%nodes]
	var newLeader string
	var lerr error
	ectx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := poll(ectx, 20*time.Millisecond, func() bool {
		newLeader, _, _, lerr = eventsLeader(ectx, survivor.NATSURL)
		return lerr == nil && newLeader != "" && newLeader != leader
	}); err != nil {
		t.Fatalf("no new EVENTS leader: %v (last: %q, %v)\n%s", err, newLeader, lerr, survivor.Tail())
	}
	l.Measure("new EVENTS leader", "%s after %s", newLeader, time.Since(killed).Round(10*time.Millisecond))

	if err := poll(ctx, 5*time.Millisecond, func() bool { return acked() >= 2*events/3 }); err != nil {
		t.Fatal(err)
	}
	n, got = acked(), rcv.Total()
	procs[victim] = StartHub(t, hubBin, cfgs[victim])
	procs[victim].Name = leader
	l.Fault("%s restarted on its store after %s, with %d events acknowledged and %d webhook requests answered",
		leader, time.Since(killed).Round(100*time.Millisecond), n, got)
	for range pubs {
		if err := <-pubErrs; err != nil {
			t.Fatalf("publishing: %v", err)
		}
	}
	l.Measure("all events acknowledged after", "%s", time.Since(start).Round(100*time.Millisecond))
	if d := <-resumed; d >= 0 {
		l.Measure("1,000 more webhook requests answered", "%s after the kill", d.Round(100*time.Millisecond))
	}
	ackedIDs := map[string]bool{}
	for _, p := range pubs {
		for id := range p.AckedIDs() {
			ackedIDs[id] = true
		}
		st := p.Stats()
		l.Attempts += st.Attempts
		l.Errors += st.Errors
		l.Acknowledged += st.Acknowledged
		l.AckedDuplicate += st.AckedDuplicate
	}
	want := map[string]int{}
	for _, s := range subs {
		want[s] = len(ackedIDs)
	}
	if err := rcv.WaitDistinct(ctx, want); err != nil {
		t.Errorf("not everything delivered: %v", err)
	}
	l.Measure("everything delivered after", "%s", time.Since(start).Round(100*time.Millisecond))
	// The restarted node catches up: every replica current.
	var msgs uint64
	if err := poll(ctx, 100*time.Millisecond, func() bool {
		var current bool
		_, current, msgs, err = eventsLeader(ctx, procs[victim].NATSURL)
		return err == nil && current
	}); err != nil {
		t.Errorf("EVENTS replicas not current: %v", err)
	}
	l.Measure("EVENTS after the restart", "%d messages, every replica current", msgs)
	deadIDs := finishLedger(t, l, survivor, "webhook")
	for _, p := range procs {
		if p != survivor {
			logMeasures(l, p)
		}
	}
	for _, s := range subs {
		l.Add(Account(s, "webhook", webhookIDs(ackedIDs, s), rcv.Counts(s), deadIDs[s]))
	}
	if err := StopAll(procs...); err != nil {
		t.Errorf("stopping the cluster: %v", err)
	}
	l.Report(t, start)
	checkLedger(t, l, 0)
	if msgs != events {
		t.Errorf("EVENTS holds %d messages, want %d (each id stored once)", msgs, events)
	}
}

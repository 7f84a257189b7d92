package shop_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/examples/shop"
	"github.com/hubproject/hub/testhub"
)

// The subscriptions the shop runs with in production, as YAML.
const subscriptions = `
subscriptions:
  - id: crm
    channel: webhook
    events: ["order.>"]
    url: https://crm.example.com/hooks
    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
  - id: confirmation
    channel: email
    events: [order.created]
    to: "{{ .data.customer.email }}"
    subject: "Order {{ .data.id }} confirmed"
    text: "Hi {{ .data.customer.name }}, your total is {{ .data.total }}."
  - id: confirmation-sms
    channel: sms
    events: [order.created]
    to: "{{ .data.customer.phone }}"
    body: "Order {{ .data.id }} confirmed"
`

func TestPlaceOrderNotifiesEveryone(t *testing.T) {
	h := testhub.Start(t, testhub.WithConfigYAML(subscriptions))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	s := shop.New(h.Publisher)
	err := s.PlaceOrder(ctx, shop.Order{ID: "42", Total: 99.5, Customer: shop.Customer{Name: "Ada", Email: "ada@example.com", Phone: "+15551234567"}})
	if err != nil {
		t.Fatal(err)
	}

	hook, err := h.WaitDelivered(ctx, "order-42", "crm")
	if err != nil {
		t.Fatal(err)
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(hook.EventJSON, &ev); err != nil || ev.Type != "order.created" || ev.Data.ID != "42" {
		t.Fatalf("webhook body %s", hook.EventJSON)
	}

	mail, err := h.WaitDelivered(ctx, "order-42", "confirmation")
	if err != nil {
		t.Fatal(err)
	}
	if mail.Recipient != "ada@example.com" || mail.Content.Subject != "Order 42 confirmed" || !strings.Contains(mail.Content.Text, "Hi Ada, your total is 99.5") {
		t.Fatalf("email %+v", mail)
	}

	sms, err := h.WaitDelivered(ctx, "order-42", "confirmation-sms")
	if err != nil {
		t.Fatal(err)
	}
	if sms.Recipient != "+15551234567" || sms.Content.Text != "Order 42 confirmed" {
		t.Fatalf("sms %+v", sms)
	}
}

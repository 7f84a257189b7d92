// Package shop is a tiny example app that publishes events to the hub. Its
// test (shop_test.go) shows how an app tests its notifications with the
// whole hub running in-process: no Docker, no outside services.
package shop

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hubproject/hub/publisher"
)

// Order is what the shop sells.
type Order struct {
	ID       string   `json:"id"`
	Total    float64  `json:"total"`
	Customer Customer `json:"customer"`
}

// Customer is who to notify.
type Customer struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Phone string `json:"phone"`
}

// Shop publishes its events through the hub.
type Shop struct {
	pub *publisher.Publisher
}

// New returns a Shop publishing with p.
func New(p *publisher.Publisher) *Shop { return &Shop{pub: p} }

// PlaceOrder records an order and tells everyone who subscribed to
// order.created. The event id is the order id, so a retried call is stored
// once.
func (s *Shop) PlaceOrder(ctx context.Context, o Order) error {
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if _, err := s.pub.Publish(ctx, publisher.Event{ID: "order-" + o.ID, Type: "order.created", Source: "shop", Data: data}); err != nil {
		return fmt.Errorf("place order %s: %w", o.ID, err)
	}
	return nil
}

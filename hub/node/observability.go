package node

import (
	"context"

	"github.com/hubproject/hub/hub/api"
)

// startObservability starts metrics collection before the dispatchers, so
// their first outcomes are counted.
func (n *Node) startObservability(context.Context) error { return nil }

// mountObservability adds /metrics and the dashboard to the HTTP API.
func (n *Node) mountObservability(*api.Server) {}

// stopObservability stops what startObservability started.
func (n *Node) stopObservability(context.Context) error { return nil }

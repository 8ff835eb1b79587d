// Package e2e_test runs calls end to end through the whole signaling system
// (stack.Start: NATS, the registry and two edges): two pion peers in Go, and
// two tabs of a headless Chromium that load the edge's demo page. Every call
// goes from one edge to the other, so it crosses NATS.
package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/natsrtc/signal/services/client"
)

// step bounds each wait of the tests. Calls on loopback connect in well
// under a second; the margin is for -race on a loaded 2-core runner.
const step = 15 * time.Second

// login dials url and logs in as name, for the duration of t.
func login(t *testing.T, url, name string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), step)
	defer cancel()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if m, err := c.Login(ctx, name); err != nil {
		t.Fatalf("login %q: %v (%s)", name, err, m.Raw)
	}
	return c
}

//go:build !linux

package edge

import (
	"errors"

	"github.com/gobwas/ws"

	"github.com/natsrtc/signal/services/natsconn"
)

// poller is Linux only; elsewhere every connection has its reading
// goroutine.
type poller struct {
	tap     *natsconn.Tap
	batch   []byte
	senders []*conn
	maxPay  int64
	maxGen  uint64
	e       *Edge
}

func newPoller(*Edge) (*poller, error) { return nil, errors.New("no poller on this system") }

func socket(*conn) (int, error)   { return -1, errors.New("no poller") }
func (*poller) watch(*conn) error { return errors.New("no poller") }
func (*poller) forget(*conn)      {}
func (*poller) close()            {}

// writeNow is never called: without a poller no connection has c.raw.
func (c *conn) writeNow(ws.OpCode, []byte) ([]byte, error) {
	return nil, errors.New("no direct writes")
}

func sentSoFar(*conn) uint64  { return 0 }
func ackedSoFar(*conn) uint64 { return 0 }

//go:build !linux

package edge

import "errors"

// poller is Linux only; elsewhere every connection has its reading
// goroutine.
type poller struct{}

func newPoller(*Edge) (*poller, error) { return nil, errors.New("no poller on this system") }

func socket(*conn) (int, error)   { return -1, errors.New("no poller") }
func (*poller) watch(*conn) error { return errors.New("no poller") }
func (*poller) forget(*conn)      {}
func (*poller) close()            {}
func (c *conn) readReady()        {}

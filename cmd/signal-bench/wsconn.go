package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// maxMessage bounds one message the tool accepts from a server.
const maxMessage = 1 << 20

var (
	errServerClosed = errors.New("server sent a close frame")
	errTooBig       = errors.New("server message too big")
	errBadFrame     = errors.New("malformed frame from server")
)

// wsConn is a minimal WebSocket client connection: one reader (the goroutine
// that calls readMessage) and any number of writers (serialized by wmu).
// Buffers are reused, so steady-state reading and writing allocate nothing.
type wsConn struct {
	nc net.Conn
	br *bufio.Reader

	wmu       sync.Mutex
	wbuf      []byte
	closeSent atomic.Bool

	msg  []byte    // the message being read; valid until the next readMessage
	ctl  [125]byte // control frame payload
	hdr  [8]byte
	done chan struct{} // closed by the reader goroutine when it exits, if one runs
}

// dialer opens connections, spreading them over source addresses.
type dialer struct {
	timeout time.Duration
	sources []net.IP // nil: let the kernel choose
	readBuf int
}

// dial connects to url (already validated and normalized) from the source
// address idx picks, and completes the WebSocket handshake.
func (d *dialer) dial(ctx context.Context, url string, idx int) (*wsConn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if len(d.sources) > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: d.sources[idx%len(d.sources)]}
		nd.Control = bindNoPort
	}
	wd := ws.Dialer{Timeout: d.timeout, NetDial: nd.DialContext}
	conn, br, _, err := wd.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	var r io.Reader = conn
	if br != nil {
		// The server wrote frames right behind its handshake response (the
		// tutorial server's "Hello world"): read those first.
		r = io.MultiReader(br, conn)
	}
	size := d.readBuf
	if size == 0 {
		size = 4096
	}
	return &wsConn{nc: conn, br: bufio.NewReaderSize(r, size), done: make(chan struct{})}, nil
}

// writeFrame writes one masked frame in a single Write.
func (c *wsConn) writeFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], 0x80|byte(op))
	n := len(p)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	b = append(b, mask[:]...)
	h := len(b)
	b = append(b, p...)
	ws.Cipher(b[h:], mask, 0)
	c.wbuf = b
	_, err := c.nc.Write(b)
	return err
}

// writeText sends p as one text frame.
func (c *wsConn) writeText(p []byte) error { return c.writeFrame(ws.OpText, p) }

// sendClose sends a normal close frame once.
func (c *wsConn) sendClose() error {
	if !c.closeSent.CompareAndSwap(false, true) {
		return nil
	}
	return c.writeFrame(ws.OpClose, []byte{0x03, 0xe8}) // 1000
}

// readMessage returns the next complete data message (text or binary),
// answering pings on the way. The returned slice is valid until the next
// call. A close frame from the server is echoed and ends with
// errServerClosed.
func (c *wsConn) readMessage() (ws.OpCode, []byte, error) {
	c.msg = c.msg[:0]
	var mop ws.OpCode
	for {
		b0, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		b1, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		fin, op := b0&0x80 != 0, ws.OpCode(b0&0x0f)
		n := int64(b1 & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(c.br, c.hdr[:2]); err != nil {
				return 0, nil, err
			}
			n = int64(binary.BigEndian.Uint16(c.hdr[:2]))
		case 127:
			if _, err := io.ReadFull(c.br, c.hdr[:8]); err != nil {
				return 0, nil, err
			}
			n = int64(binary.BigEndian.Uint64(c.hdr[:8]))
		}
		var mask [4]byte
		masked := b1&0x80 != 0
		if masked {
			if _, err := io.ReadFull(c.br, mask[:]); err != nil {
				return 0, nil, err
			}
		}
		if op.IsControl() {
			if n > int64(len(c.ctl)) || !fin {
				return 0, nil, errBadFrame
			}
			p := c.ctl[:n]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return 0, nil, err
			}
			if masked {
				ws.Cipher(p, mask, 0)
			}
			switch op {
			case ws.OpPing:
				if err := c.writeFrame(ws.OpPong, p); err != nil {
					return 0, nil, err
				}
			case ws.OpClose:
				if c.closeSent.CompareAndSwap(false, true) {
					_ = c.writeFrame(ws.OpClose, p)
				}
				return 0, nil, errServerClosed
			}
			continue
		}
		switch op {
		case ws.OpContinuation:
			if mop == 0 {
				return 0, nil, errBadFrame
			}
		case ws.OpText, ws.OpBinary:
			if mop != 0 {
				return 0, nil, errBadFrame
			}
			mop = op
		default:
			return 0, nil, errBadFrame
		}
		if int64(len(c.msg))+n > maxMessage {
			return 0, nil, errTooBig
		}
		start := len(c.msg)
		c.msg = append(c.msg, make([]byte, n)...)[:start+int(n)]
		if _, err := io.ReadFull(c.br, c.msg[start:]); err != nil {
			return 0, nil, err
		}
		if masked {
			ws.Cipher(c.msg[start:], mask, 0)
		}
		if fin {
			return mop, c.msg, nil
		}
	}
}

// closeWait sends a close frame, waits up to timeout for the reader
// goroutine (which sees the server's close frame or the end of the socket)
// and closes the socket. It reports whether the server completed the close
// handshake in time.
func (c *wsConn) closeWait(timeout time.Duration) bool {
	_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
	_ = c.sendClose()
	t := time.NewTimer(timeout)
	defer t.Stop()
	ok := true
	select {
	case <-c.done:
	case <-t.C:
		ok = false
	}
	_ = c.nc.Close()
	return ok
}

// closeInline is closeWait for a connection that has no reader goroutine:
// it reads until the server's close frame or the end of the socket.
func (c *wsConn) closeInline(timeout time.Duration) bool {
	_ = c.nc.SetDeadline(time.Now().Add(timeout))
	_ = c.sendClose()
	ok := false
	for {
		_, _, err := c.readMessage()
		if err != nil {
			ok = errors.Is(err, errServerClosed) || errors.Is(err, io.EOF)
			break
		}
	}
	_ = c.nc.Close()
	return ok
}

// loginResult is the outcome of one login.
type loginResult int

const (
	loginOK loginResult = iota
	loginRefused
	loginFailed
)

// connectLogin dials, logs in as name and waits for the reply, skipping
// frames that are not the reply (the tutorial's "Hello world", anything
// else). Within timeout; on return the connection has no deadline.
func (d *dialer) connectLogin(ctx context.Context, url, name string, idx int, timeout time.Duration) (*wsConn, loginResult, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.dial(dctx, url, idx)
	if err != nil {
		return nil, loginFailed, fmt.Errorf("dial: %w", err)
	}
	res, err := c.login(name, timeout)
	if err != nil || res != loginOK {
		_ = c.nc.Close()
		return nil, res, err
	}
	return c, res, nil
}

// login sends a login frame and reads until its reply.
func (c *wsConn) login(name string, timeout time.Duration) (loginResult, error) {
	_ = c.nc.SetDeadline(time.Now().Add(timeout))
	b := make([]byte, 0, 64+len(name))
	b = append(b, `{"type":"login","name":`...)
	b = appendJSONString(b, name)
	b = append(b, '}')
	if err := c.writeText(b); err != nil {
		return loginFailed, fmt.Errorf("send login: %w", err)
	}
	var f frame
	for {
		op, m, err := c.readMessage()
		if err != nil {
			return loginFailed, fmt.Errorf("login reply: %w", err)
		}
		if op != ws.OpText || !parseFrame(m, &f) {
			continue
		}
		switch string(f.typ) {
		case "login":
			_ = c.nc.SetDeadline(time.Time{})
			if string(f.success) == "true" {
				return loginOK, nil
			}
			return loginRefused, nil
		case "error":
			return loginFailed, fmt.Errorf("login: error frame: %s", f.message)
		}
	}
}

// Package client is a small Go client for the signaling protocol (the
// tutorial's JSON over WebSocket): dial, log in, send offers, answers,
// candidates and leave, receive typed messages, close. Beyond the tutorial:
// resumable logins and resume ([Client.LoginResumable], [Client.Resume]),
// rooms ([Client.Join], [Client.Part], [Client.RoomMessage]), app messages
// ([Client.Message]) and presence ([Client.Watch], [Client.Unwatch]). Tests,
// bots and SFU connectors use it.
//
// A Client answers pings by itself. Received messages queue up (without
// bound) until Recv takes them; a program that stops calling Recv should
// Close the client.
package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Message is a frame received from the server. Fields a type does not use
// are zero; Raw holds the frame exactly as received.
type Message struct {
	Type      string          `json:"type"`
	Success   bool            `json:"success,omitempty"`
	Name      string          `json:"name,omitempty"`
	Message   string          `json:"message,omitempty"`
	Offer     json.RawMessage `json:"offer,omitempty"`
	Answer    json.RawMessage `json:"answer,omitempty"`
	Candidate json.RawMessage `json:"candidate,omitempty"`
	// Room of a join or part reply, joined, parted, or a room message.
	Room string `json:"room,omitempty"`
	// Users of a join reply: the room's other members.
	Users []string `json:"users,omitempty"`
	// Online of a presence frame.
	Online bool `json:"online,omitempty"`
	// Data of an app message, raw.
	Data json.RawMessage `json:"data,omitempty"`
	// Resume of a successful resumable login: the token for [Client.Resume].
	Resume string `json:"resume,omitempty"`
	// Resumed: the login took a held session over.
	Resumed bool `json:"resumed,omitempty"`
	// Raw is the frame exactly as received.
	Raw []byte `json:"-"`
}

// Errors returned by the Client.
var (
	// ErrNameTaken: the server refused the login (the name is taken or
	// invalid); the connection stays open and Login may be called again.
	ErrNameTaken = errors.New("client: login refused")
	// ErrClosed: the connection is closed; see CloseStatus for why.
	ErrClosed = errors.New("client: connection closed")
	// ErrBadResumeToken: Resume's token does not match the held session;
	// the name stays taken until the session ends.
	ErrBadResumeToken = errors.New("client: resume token does not match")
	// ErrRefused: the server answered a join or part with success false;
	// the error wrapping it carries the server's message.
	ErrRefused = errors.New("client: refused")
)

// Options for Dial. The zero value is ready to use.
type Options struct {
	// Header is sent with the upgrade request (e.g. Authorization, Origin).
	Header http.Header
	// LocalAddr, if set, is the local IP to dial from (e.g. 127.0.0.2).
	LocalAddr net.IP
	// Timeout bounds the dial and handshake. Zero: 10s.
	Timeout time.Duration
	// TLSConfig is used for wss:// URLs. Zero: the system roots.
	TLSConfig *tls.Config
}

// Client is one signaling connection. Its methods are safe for concurrent
// use, except that Recv should have one caller at a time.
type Client struct {
	conn net.Conn
	wmu  sync.Mutex

	mu       sync.Mutex
	queue    []Message
	changed  chan struct{} // closed and replaced when queue or closed change
	closed   bool
	received int64 // text frames read since the last successful login reply
	closeErr error
	code     ws.StatusCode
	reason   string
	done     chan struct{}
}

// Dial connects to a signaling server at url ("ws://host:port/").
func Dial(ctx context.Context, url string, opts *Options) (*Client, error) {
	if opts == nil {
		opts = &Options{}
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	d := ws.Dialer{Timeout: timeout, TLSConfig: opts.TLSConfig}
	if opts.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(opts.Header)
	}
	if opts.LocalAddr != nil {
		nd := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: opts.LocalAddr}}
		d.NetDial = nd.DialContext
	}
	conn, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	c := &Client{conn: conn, changed: make(chan struct{}), done: make(chan struct{})}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	go c.readLoop(r)
	return c, nil
}

func (c *Client) readLoop(r io.Reader) {
	defer close(c.done)
	var msg []byte
	var err error
	for {
		var h ws.Header
		h, err = ws.ReadHeader(r)
		if err != nil {
			break
		}
		p := make([]byte, h.Length)
		if _, err = io.ReadFull(r, p); err != nil {
			break
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		if h.OpCode.IsControl() {
			switch h.OpCode {
			case ws.OpPing:
				_ = c.writeFrame(ws.OpPong, p)
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(p)
				c.mu.Lock()
				c.code, c.reason = code, reason
				c.mu.Unlock()
				_ = c.writeFrame(ws.OpClose, p)
				err = ErrClosed
			}
			if err != nil {
				break
			}
			continue
		}
		msg = append(msg, p...)
		if !h.Fin {
			continue
		}
		m := Message{Raw: msg}
		if jerr := json.Unmarshal(msg, &m); jerr != nil {
			m.Type = ""
		}
		msg = nil
		c.mu.Lock()
		if m.Type == "login" && m.Success {
			c.received = 0
		} else {
			c.received++
		}
		c.queue = append(c.queue, m)
		c.wakeLocked()
		c.mu.Unlock()
	}
	_ = c.conn.Close()
	c.mu.Lock()
	c.closed = true
	if c.closeErr == nil {
		c.closeErr = err
	}
	c.wakeLocked()
	c.mu.Unlock()
}

// wakeLocked wakes every waiter of Recv and take. c.mu is held.
func (c *Client) wakeLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) writeFrame(op ws.OpCode, p []byte) error {
	f := ws.MaskFrameInPlace(ws.NewFrame(op, true, append([]byte(nil), p...)))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ws.WriteFrame(c.conn, f)
}

// SendRaw sends data as one text frame, as is.
func (c *Client) SendRaw(data []byte) error {
	if err := c.writeFrame(ws.OpText, data); err != nil {
		return fmt.Errorf("client: send: %w", err)
	}
	return nil
}

// WriteFrame sends one frame of any opcode, as is (for tests of hostile
// clients).
func (c *Client) WriteFrame(op ws.OpCode, fin bool, payload []byte) error {
	f := ws.MaskFrameInPlace(ws.NewFrame(op, fin, append([]byte(nil), payload...)))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return ws.WriteFrame(c.conn, f)
}

// Send marshals v to JSON and sends it.
func (c *Client) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return c.SendRaw(b)
}

type out struct {
	Type      string `json:"type"`
	Name      string `json:"name"`
	Offer     any    `json:"offer,omitempty"`
	Answer    any    `json:"answer,omitempty"`
	Candidate any    `json:"candidate,omitempty"`
}

// Offer sends an offer to the user named to.
func (c *Client) Offer(to string, offer any) error {
	return c.Send(out{Type: "offer", Name: to, Offer: raw(offer)})
}

// Answer sends an answer to the user named to.
func (c *Client) Answer(to string, answer any) error {
	return c.Send(out{Type: "answer", Name: to, Answer: raw(answer)})
}

// Candidate sends an ICE candidate to the user named to.
func (c *Client) Candidate(to string, candidate any) error {
	return c.Send(out{Type: "candidate", Name: to, Candidate: raw(candidate)})
}

// Leave tells the user named to that the call is over.
func (c *Client) Leave(to string) error {
	return c.Send(out{Type: "leave", Name: to})
}

// raw keeps a nil payload as JSON null rather than dropping the field.
func raw(v any) any {
	if v == nil {
		return json.RawMessage("null")
	}
	return v
}

// Login logs in as name and waits for the reply. It returns ErrNameTaken when
// the server refuses (m.Message says why), and an error for an error frame.
// Other messages that arrive before the reply are dropped.
func (c *Client) Login(ctx context.Context, name string) (Message, error) {
	return c.login(ctx, loginFrame{Type: "login", Name: name})
}

// LoginResumable logs in as name asking for a resumable session, like
// Login. The reply's m.Resume is the token that [Client.Resume] presents,
// on this edge or another, to take the session over after the connection
// dropped (within the edge's -resume-grace; a clean Close releases the name
// at once).
func (c *Client) LoginResumable(ctx context.Context, name string) (Message, error) {
	return c.login(ctx, loginFrame{Type: "login", Name: name, Resumable: true})
}

// Received returns how many text frames the client has read off its
// connection since the last successful login reply (queued or taken by
// Recv): what a resume on another connection reports (ResumeFrom), so that
// the edge sends again exactly what this connection did not get.
func (c *Client) Received() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received
}

// Resume logs in as name with the token of its last login reply. When the
// session is held, it is taken over: m.Resumed is true, frames kept for it
// follow the reply (Recv them), the peers keep the call and m.Resume is the
// next token. When the name is free (the grace passed) it is a fresh login,
// m.Resumed false. A token that does not match gives ErrBadResumeToken, any
// other refusal ErrNameTaken.
func (c *Client) Resume(ctx context.Context, name, token string) (Message, error) {
	return c.resume(ctx, loginFrame{Type: "login", Name: name, Resume: token})
}

// ResumeFrom is Resume for a client that knows how many frames its last
// connection received after its login reply (that client's Received): the
// edge then delivers exactly the frames after those, once, whatever the
// drop left unread in the socket. Resume without it relies on what the
// old connection's TCP stack acknowledged, which a reset can blur.
func (c *Client) ResumeFrom(ctx context.Context, name, token string, received int64) (Message, error) {
	return c.resume(ctx, loginFrame{Type: "login", Name: name, Resume: token, Received: &received})
}

func (c *Client) resume(ctx context.Context, f loginFrame) (Message, error) {
	m, err := c.login(ctx, f)
	if errors.Is(err, ErrNameTaken) && m.Message == "resume token does not match" {
		return m, ErrBadResumeToken
	}
	return m, err
}

type loginFrame struct {
	Type      string `json:"type"`
	Name      string `json:"name"`
	Resumable bool   `json:"resumable,omitempty"`
	Resume    string `json:"resume,omitempty"`
	Received  *int64 `json:"received,omitempty"`
}

func (c *Client) login(ctx context.Context, f loginFrame) (Message, error) {
	if err := c.Send(f); err != nil {
		return Message{}, err
	}
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			return m, err
		}
		switch m.Type {
		case "login":
			if !m.Success {
				return m, ErrNameTaken
			}
			return m, nil
		case "error":
			return m, fmt.Errorf("client: login: %s", m.Message)
		}
		// Anything else is not ours to judge here; keep looking.
	}
}

// Join joins room and waits for the reply: the room's other members. A
// refusal (full, already a member, invalid) gives an error wrapping
// ErrRefused with the server's message. The members get
// {"type":"joined"}; once joined, Recv gets joined, parted and room
// messages of the room. Other messages that arrive meanwhile stay queued
// for Recv.
func (c *Client) Join(ctx context.Context, room string) ([]string, error) {
	m, err := c.roomRequest(ctx, "join", room)
	if err != nil {
		return nil, err
	}
	if m.Users == nil {
		return []string{}, nil
	}
	return m.Users, nil
}

// Part leaves room and waits for the reply, like Join; the members get
// {"type":"parted"}.
func (c *Client) Part(ctx context.Context, room string) error {
	_, err := c.roomRequest(ctx, "part", room)
	return err
}

func (c *Client) roomRequest(ctx context.Context, typ, room string) (Message, error) {
	if err := c.Send(struct {
		Type string `json:"type"`
		Room string `json:"room"`
	}{typ, room}); err != nil {
		return Message{}, err
	}
	m, err := c.take(ctx, func(m *Message) bool {
		return (m.Type == typ && m.Room == room) || (m.Type == "error" && strings.HasPrefix(m.Message, "not logged in"))
	})
	switch {
	case err != nil:
		return m, err
	case m.Type == "error":
		return m, fmt.Errorf("client: %s: %s", typ, m.Message)
	case !m.Success:
		return m, fmt.Errorf("%w: %s %q: %s", ErrRefused, typ, room, m.Message)
	}
	return m, nil
}

// RoomMessage sends data (any JSON value) to every other member of room:
// they get {"type":"message","room":R,"name":SENDER,"data":X}.
func (c *Client) RoomMessage(room string, data any) error {
	return c.Send(struct {
		Type string `json:"type"`
		Room string `json:"room"`
		Data any    `json:"data"`
	}{"message", room, raw(data)})
}

// Message sends data (any JSON value) to the user named to, who gets
// {"type":"message","name":SENDER,"data":X}.
func (c *Client) Message(to string, data any) error {
	return c.Send(struct {
		Type string `json:"type"`
		Name string `json:"name"`
		Data any    `json:"data"`
	}{"message", to, raw(data)})
}

// Watch asks for the presence of names: Recv gets
// {"type":"presence","name":N,"online":B} for each now, and again on every
// change, until Unwatch or Close.
func (c *Client) Watch(names ...string) error { return c.watch("watch", names) }

// Unwatch stops watching names.
func (c *Client) Unwatch(names ...string) error { return c.watch("unwatch", names) }

func (c *Client) watch(typ string, names []string) error {
	if names == nil {
		names = []string{}
	}
	return c.Send(struct {
		Type  string   `json:"type"`
		Names []string `json:"names"`
	}{typ, names})
}

// Recv returns the next message, waiting until one arrives, the connection
// closes (ErrClosed, or the read error) or ctx is done.
func (c *Client) Recv(ctx context.Context) (Message, error) {
	return c.take(ctx, nil)
}

// take returns the first queued message that match accepts (any, when
// match is nil), leaving the others queued, and waits for one as Recv does.
func (c *Client) take(ctx context.Context, match func(*Message) bool) (Message, error) {
	for {
		c.mu.Lock()
		for i := range c.queue {
			if match != nil && !match(&c.queue[i]) {
				continue
			}
			m := c.queue[i]
			if i == 0 {
				c.queue[0] = Message{}
				c.queue = c.queue[1:]
			} else {
				c.queue = slices.Delete(c.queue, i, i+1)
			}
			c.mu.Unlock()
			return m, nil
		}
		if c.closed {
			err := c.closeErr
			c.mu.Unlock()
			if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				err = ErrClosed
			}
			return Message{}, err
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		}
	}
}

// CloseStatus returns the code and reason of the server's close frame, once
// the connection has closed (zero if it closed without one).
func (c *Client) CloseStatus() (ws.StatusCode, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.reason
}

// Done is closed when the connection has closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close sends a normal close frame, waits briefly for the server's reply and
// closes the connection.
func (c *Client) Close() error {
	_ = c.writeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	if err := c.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// Abort closes the TCP connection without a close handshake, as a crashed
// client or a lost network would.
func (c *Client) Abort() error { return c.conn.Close() }

// Conn returns the underlying connection (for tests).
func (c *Client) Conn() net.Conn { return c.conn }

package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/natsrtc/signal/services/client"
)

// These examples need a signaling server ("go run ./cmd/signal" listens on
// ws://localhost:9090/), so they are compiled but not run; edge/stack's
// Example_call runs a call against a whole system in the process.

// A call as the tutorial makes it: log in, offer, wait for the answer and
// candidates, hang up.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://localhost:9090/", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "alice"); errors.Is(err, client.ErrNameTaken) {
		log.Fatal("alice is taken")
	} else if err != nil {
		log.Fatal(err)
	}
	// Any JSON value is relayed byte for byte: here, what a browser's
	// RTCPeerConnection produces.
	if err := c.Offer("bob", json.RawMessage(`{"type":"offer","sdp":"v=0\r\n..."}`)); err != nil {
		log.Fatal(err)
	}
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			log.Fatal(err)
		}
		switch m.Type {
		case "answer":
			fmt.Printf("bob answered: %s\n", m.Answer)
		case "candidate":
			fmt.Printf("a candidate of bob's: %s\n", m.Candidate)
			_ = c.Leave("bob")
			return
		case "error":
			log.Fatal(m.Message) // e.g. user "bob" is not online
		}
	}
}

// A room: join it, see who is there, send every member a message, watch a
// name, and read what comes.
func ExampleClient_Join() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://localhost:9090/", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "bot"); err != nil {
		log.Fatal(err)
	}
	users, err := c.Join(ctx, "standup")
	if errors.Is(err, client.ErrRefused) {
		log.Fatal(err) // e.g. room is full
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Println("already in the room:", users)
	if err := c.RoomMessage("standup", map[string]string{"text": "hello, room"}); err != nil {
		log.Fatal(err)
	}
	if err := c.Watch("alice"); err != nil {
		log.Fatal(err)
	}
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			log.Fatal(err)
		}
		switch m.Type {
		case "joined", "parted":
			fmt.Println(m.Name, m.Type, m.Room)
		case "message":
			fmt.Printf("%s says %s (room %q)\n", m.Name, m.Data, m.Room)
		case "presence":
			fmt.Println(m.Name, "online:", m.Online)
		case "offer":
			// A member calls: answer it as in a one-to-one call.
		}
	}
}

// A session that survives a lost connection: log in resumable, and after a
// drop, resume with the token on any edge within the grace.
func ExampleClient_Resume() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://localhost:9090/", nil)
	if err != nil {
		log.Fatal(err)
	}
	m, err := c.LoginResumable(ctx, "alice")
	if err != nil {
		log.Fatal(err)
	}
	token := m.Resume
	_ = c.Abort() // the network goes away: no close frame, the session is held

	c, err = client.Dial(ctx, "ws://localhost:9091/", nil) // another edge
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m, err = c.Resume(ctx, "alice", token)
	if errors.Is(err, client.ErrBadResumeToken) {
		log.Fatal("not our session")
	} else if err != nil {
		log.Fatal(err)
	}
	// Resumed: what was sent to alice meanwhile follows, in order; the
	// peers kept the call. Not resumed: the grace had passed and this is a
	// fresh login.
	fmt.Println("resumed:", m.Resumed, "next token:", m.Resume != "")
}

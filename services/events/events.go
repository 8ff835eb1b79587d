// Package events is the lifecycle event stream that the services publish and
// that an application's backend consumes: the JetStream stream SIGNAL_EVENTS,
// subjects "events.<kind>.<name token>", one JSON [Event] per message.
//
// The registry creates the stream (like the KV buckets) and publishes login,
// logout, join and part; edges publish call_start and call_end. A backend
// reads the stream with a durable consumer and can replay it; cmd/webhook
// does that and POSTs each event to a URL. The contract is in the README
// ("Events and webhooks").
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream is the name of the events stream.
const Stream = "SIGNAL_EVENTS"

// SubjectPrefix prefixes every event subject: "events.<kind>.<token>".
const SubjectPrefix = "events."

// All is the stream's subject filter.
const All = SubjectPrefix + ">"

// Kinds of events.
const (
	KindLogin     = "login"      // a name was claimed (a resume is a login with Resumed set)
	KindLogout    = "logout"     // a name was released, with Reason
	KindJoin      = "join"       // a member joined Room
	KindPart      = "part"       // a member left Room, with Reason
	KindCallStart = "call_start" // an answer was relayed: Name answered Peer
	KindCallEnd   = "call_end"   // a call ended: leave, or an end of either side (Reason)
)

// Reasons of logout (and of part and call_end when a session's end caused
// them).
const (
	ReasonClose    = "close"     // the connection ended and the session was not held
	ReasonDrop     = "drop"      // a plain session's connection dropped without a close frame
	ReasonExpired  = "expired"   // a held session's resume grace ended unresumed
	ReasonEdgeLost = "edge_lost" // its edge died or lost its lease
	ReasonKicked   = "kicked"    // an admin kicked it (registry.kick)
	ReasonResumed  = "resumed"   // the session was taken over by a resume (a login follows)
	ReasonLeave    = "leave"     // call_end: one side sent leave
	ReasonPart     = "part"      // part: the member asked to part
)

// Event is one lifecycle event. Name is the user's name as they logged in
// (the subject carries its token); Edge the id of the edge that held the
// session; Time when it happened (UTC). The other fields are set where the
// kind needs them.
type Event struct {
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Edge    string    `json:"edge"`
	Time    time.Time `json:"time"`
	Session string    `json:"session,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Resumed bool      `json:"resumed,omitempty"`
	Room    string    `json:"room,omitempty"`
	Peer    string    `json:"peer,omitempty"`
	// Message is free text that comes with the reason (a kick's reason).
	Message string `json:"message,omitempty"`
}

// Subject returns the subject of an event of kind about the user whose name
// token is token.
func Subject(kind, token string) string { return SubjectPrefix + kind + "." + token }

// Defaults of the stream's retention.
const (
	// DefaultMaxAge keeps a day of events: time for a backend that was
	// down overnight to catch up.
	DefaultMaxAge = 24 * time.Hour
	// DefaultMaxBytes bounds the stream at 1 GiB; the oldest events go
	// first.
	DefaultMaxBytes = 1 << 30
	// DuplicateWindow: a publish retried within it with the same
	// Nats-Msg-Id is stored once.
	DuplicateWindow = 2 * time.Minute
)

// StreamConfig is what the registry creates the stream with. Zero maxAge
// and maxBytes select the defaults; negative maxBytes means no byte limit.
// Replicas as the KV buckets (zero: 1).
func StreamConfig(maxAge time.Duration, maxBytes int64, replicas int) jetstream.StreamConfig {
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	if maxBytes == 0 {
		maxBytes = DefaultMaxBytes
	}
	if maxBytes < 0 {
		maxBytes = -1
	}
	if replicas == 0 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:        Stream,
		Description: "signaling lifecycle events: events.<kind>.<name token>",
		Subjects:    []string{All},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      maxAge,
		MaxBytes:    maxBytes,
		Replicas:    replicas,
		Duplicates:  DuplicateWindow,
		Storage:     jetstream.FileStorage,
	}
}

// Ensure creates the stream, or updates its limits to cfg.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("events: stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// ErrNoStream is returned by Publish when no stream takes the event (the
// registry has not created it yet).
var ErrNoStream = errors.New("events: no stream for the event")

// Msg builds the NATS message of ev for the user whose name token is token.
// id, when set, becomes Nats-Msg-Id, so that a publish retried within
// DuplicateWindow is stored once.
func Msg(ev Event, token, id string) *nats.Msg {
	b, _ := json.Marshal(ev)
	m := &nats.Msg{Subject: Subject(ev.Kind, token), Data: b}
	if id != "" {
		m.Header = nats.Header{jetstream.MsgIDHeader: {id}}
	}
	return m
}

package registry

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/events"
)

// eventQueue bounds the events waiting to be published; beyond it events
// are dropped and counted (signal_registry_events_total{result="dropped"}).
const eventQueue = 8192

// eventPub publishes lifecycle events to the stream from one goroutine, so
// that a slow or absent stream never holds up a login: JetStream async
// publishes with a message id (a retried request stores its event once),
// acknowledged in the background; failures are counted.
type eventPub struct {
	r    *Registry
	js   jetstream.JetStream
	q    chan eventMsg
	done chan struct{}
	once sync.Once
}

type eventMsg struct {
	ev    events.Event
	token string
	msgID string
}

func newEventPub(r *Registry) *eventPub {
	p := &eventPub{r: r, q: make(chan eventMsg, eventQueue), done: make(chan struct{})}
	js, err := jetstream.New(r.nc,
		jetstream.WithPublishAsyncMaxPending(1024),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			r.metrics.events.WithLabelValues("failed").Inc()
			r.log.Debug("event not stored", "subject", m.Subject, "err", err)
		}))
	if err != nil {
		js = r.js
	}
	p.js = js
	go p.run()
	return p
}

// publish queues ev about the user whose name token is token. msgID, when
// set, de-duplicates retries.
func (p *eventPub) publish(token string, ev events.Event, msgID string) {
	select {
	case p.q <- eventMsg{ev: ev, token: token, msgID: msgID}:
	default:
		p.r.metrics.events.WithLabelValues("dropped").Inc()
	}
}

func (p *eventPub) run() {
	defer close(p.done)
	for m := range p.q {
		if _, err := p.js.PublishMsgAsync(events.Msg(m.ev, m.token, m.msgID)); err != nil {
			p.r.metrics.events.WithLabelValues("failed").Inc()
			p.r.log.Debug("event not published", "kind", m.ev.Kind, "err", err)
			continue
		}
		p.r.metrics.events.WithLabelValues("sent").Inc()
	}
	// What is in flight gets its acknowledgement, within a bound.
	select {
	case <-p.js.PublishAsyncComplete():
	case <-time.After(p.r.cfg.Timeout):
	}
}

// stop publishes what is queued and ends the publisher. Nothing may be
// published after it.
func (p *eventPub) stop() {
	p.once.Do(func() { close(p.q) })
	<-p.done
}

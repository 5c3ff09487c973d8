package nsq

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// White-box tests of the router: they drive its methods directly, for
// states a test cannot reach through the public API without racing.

// Bug 11, order after stop_timeout: a result completed after Stop's wait
// ran out was sent straight to its doneChan, ahead of older results of the
// same channel that its courier still held (and might still deliver).
func TestCompleteAfterStopTimeoutNeverOvertakesACourier(t *testing.T) {
	p, err := NewProducer("127.0.0.1:1", NewConfig())
	require.NoError(t, err)
	p.SetLogger(nil, LogLevelError)
	r := newRouter(p)
	r.expired = true

	ch := make(chan *ProducerTransaction, 1) // has room now
	older, newer := &ProducerTransaction{doneChan: ch}, &ProducerTransaction{doneChan: ch}
	c := &courier{ch: ch}
	c.q.pushBack(older) // not delivered yet
	r.couriers = map[chan *ProducerTransaction]*courier{ch: c}

	r.complete(newer, nil)
	assert.Zero(t, len(ch), "the newer result overtook the courier's")
	require.Equal(t, 2, c.q.len())
	assert.Same(t, older, c.q.peek(0))
	assert.Same(t, newer, c.q.peek(1))
}

// Bug 1's "cannot happen" branch: an event from a Conn that is neither in
// use nor connecting is now impossible, and panics under test instead of
// being dropped quietly.
func TestEventsFromAnUnknownConnPanicUnderTest(t *testing.T) {
	p, err := NewProducer("127.0.0.1:1", NewConfig())
	require.NoError(t, err)
	p.SetLogger(nil, LogLevelError)
	r := newRouter(p)
	stray := NewConn("127.0.0.1:1", &p.config, producerConnDelegate{r})
	assert.Panics(t, func() { r.onClosed(stray) })
	assert.Panics(t, func() { r.fromConn(connFrame{c: stray, data: []byte("OK")}) })
	assert.Panics(t, func() { r.onConnected(connectResult{conn: stray}) })
}

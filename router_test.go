package nsq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

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
	c := &courier{ch: ch, backlog: new(pendingLimit)}
	c.q.pushBack(older) // not delivered yet
	r.couriers = map[chan *ProducerTransaction]*courier{ch: c}

	r.complete(newer, nil)
	assert.Zero(t, len(ch), "the newer result overtook the courier's")
	r.carryNow() // what the router does before it waits again
	assert.Zero(t, len(ch), "the newer result overtook the courier's")
	require.Equal(t, 2, c.q.len())
	assert.Same(t, older, c.q.peek(0))
	assert.Same(t, newer, c.q.peek(1))
}

// Results gathered for a courier that finishes before they are carried
// (it had delivered all it held) are delivered as if it had never run: in
// order, straight to the channel while it has room, then through a new
// courier.
func TestCarryToAFinishedCourierKeepsOrder(t *testing.T) {
	p, err := NewProducer("127.0.0.1:1", NewConfig())
	require.NoError(t, err)
	p.SetLogger(nil, LogLevelError)
	r := newRouter(p)

	ch := make(chan *ProducerTransaction, 1)
	a, b := &ProducerTransaction{doneChan: ch, size: 1}, &ProducerTransaction{doneChan: ch, size: 2}
	old := &courier{ch: ch, backlog: new(pendingLimit), finished: true}
	r.couriers = map[chan *ProducerTransaction]*courier{ch: old}
	r.carrying = 1

	r.complete(a, nil)
	r.complete(b, nil)
	assert.Zero(t, len(ch), "gathered, not sent")
	r.carryNow()
	require.Equal(t, 1, len(ch))
	assert.Same(t, a, <-ch, "the first straight to the channel")
	c := r.couriers[ch]
	require.NotSame(t, old, c, "a new courier for the rest")
	assert.Equal(t, 2, r.carrying)
	assert.Same(t, b, recvWithin(t, ch, "the second result"))
	ev := recvWithin(t, r.eventChan, "the new courier's end")
	assert.Equal(t, evCourierDone, ev.kind)
	assert.Same(t, c, ev.courier)
	assert.Zero(t, c.backlog.count.Load(), "the courier gave its room back")
	assert.Zero(t, old.q.len(), "nothing was carried to the finished courier")
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

// Bug 11, a batch taken by the write goroutine of a Conn already torn down
// (its select chose the batch over the teardown) was reported
// ErrUnknownOutcome though not a byte of it was written. The write
// goroutine reports it not written, and the router queues it again, in
// order and ahead of what was queued after it, for the next connection;
// a Flush barrier behind it waits for it again. When that connection
// cannot be made (the closed one never proved itself), it fails with the
// queue: ErrNeverSent.
func TestBatchTakenAfterTeardownIsQueuedAgain(t *testing.T) {
	for _, proven := range []bool{true, false} {
		t.Run(fmt.Sprintf("proven=%v", proven), func(t *testing.T) {
			p, err := NewProducer("127.0.0.1:1", NewConfig())
			require.NoError(t, err)
			p.SetLogger(nil, LogLevelError)
			r := newRouter(p)
			c := NewConn("127.0.0.1:1", &p.config, producerConnDelegate{r})
			c.teardown(errors.New("torn down"))
			r.conn, r.connected, r.proven, r.connectedAt = c, true, proven, time.Now()

			done := make(chan *ProducerTransaction, 3)
			tx := &ProducerTransaction{kind: kindPUB, topic: "t", body: []byte("x"), size: 1, doneChan: done}
			r.queue.pushBack(tx)
			r.prepare()
			r.handedOff()
			barrier := &ProducerTransaction{kind: kindBarrier, doneChan: done}
			r.queue.pushBack(barrier)
			r.prepare() // nothing prepared, tx pending: the barrier waits behind it
			later := &ProducerTransaction{kind: kindPUB, topic: "t", body: []byte("y"), size: 1, doneChan: done}
			r.queue.pushBack(later)
			r.writtenChan <- errNotWritten // what the write goroutine reports for it
			r.onClosed(c)

			if !proven {
				for _, want := range []*ProducerTransaction{tx, barrier, later} {
					got := <-done
					require.Same(t, want, got)
					if want == barrier {
						assert.NoError(t, got.Error)
					} else {
						assert.ErrorIs(t, got.Error, ErrNeverSent)
					}
				}
				return
			}
			assert.Empty(t, done, "nothing completed")
			require.Equal(t, 3, r.queue.len())
			assert.Same(t, tx, r.queue.peek(0))
			assert.Same(t, barrier, r.queue.peek(1))
			assert.Same(t, later, r.queue.peek(2))
			assert.Equal(t, stageRetry, tx.stage)
			assert.Zero(t, r.pending.len())
		})
	}
}

// The write goroutine's side of it: a request it takes after teardown is
// not written, and reported so.
func TestWriteGoroutineReportsARequestTakenAfterTeardown(t *testing.T) {
	for {
		closed := make(chan struct{})
		c := NewConn("pipe", NewConfig(), closeSignal(closed))
		client, server := net.Pipe()
		defer server.Close()
		c.conn, c.wb = client, newWireBuf(client, 4096)
		c.state.Store(stateConnected)
		c.teardown(errors.New("torn down"))
		c.running.Store(1)
		go c.writeLoop()
		done := make(chan error, 1)
		select {
		case c.writeChan <- writeRequest{cmd: Nop(), done: done}:
			assert.ErrorIs(t, <-done, errNotWritten)
			<-closed
			return
		case <-closed:
			// It chose the teardown: try again.
		}
	}
}

// closeSignal is a ConnDelegate that closes itself on OnClose.
type closeSignal chan struct{}

func (closeSignal) OnResponse(*Conn, []byte) {}
func (closeSignal) OnError(*Conn, []byte)    {}
func (closeSignal) OnIOError(*Conn, error)   {}
func (closeSignal) OnHeartbeat(*Conn)        {}
func (s closeSignal) OnClose(*Conn)          { close(s) }

// Found by the simulation: a context call withdrawn while the write
// goroutine had not yet reported on its batch, then answered OK by nsqd
// before that report was read, was delivered twice: its answer, then a
// "never sent" that overwrote it under the caller's feet.
func TestWithdrawnPublishAnsweredBeforeTheWriteReport(t *testing.T) {
	p, err := NewProducer("127.0.0.1:1", NewConfig())
	require.NoError(t, err)
	p.SetLogger(nil, LogLevelError)
	r := newRouter(p)
	r.conn, r.connected = NewConn("127.0.0.1:1", &p.config, producerConnDelegate{r}), true

	ctx, cancel := context.WithCancel(t.Context())
	tx := getSyncTx()
	tx.kind, tx.topic, tx.body, tx.size, tx.ctx = kindPUB, "t", []byte("x"), 1, ctx
	r.queue.pushBack(tx)
	r.prepare()
	r.handedOff() // the write goroutine has it, and has not reported yet
	cancel()
	r.withdraw(tx) // waits for the report
	require.Len(t, r.withdrawn, 1)

	r.onResponse([]byte("OK"))
	got := <-tx.doneChan
	assert.NoError(t, got.Error, "nsqd's answer")
	r.onWritten(nil)
	assert.Empty(t, r.withdrawn)
	assert.Zero(t, len(tx.doneChan), "delivered twice")
	assert.NoError(t, tx.Error)
}

package nsq

import (
	"testing"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for the guarantees of issue 8: each failed on the code
// before its fix.

// Bug 10: TryPublishAsync after Stop began returned ErrPendingFull ("retry
// later") when the limit was full, though no retry can succeed.
func TestTryPublishAsyncDuringStopIsStopped(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), testConfig(t, "max_pending", 1, "stop_timeout", "200ms"))
	s.Go(func(c *fakensqd.Conn) {
		c.Handshake(nil)
		c.ExpectPublish() // never answered: the one publish keeps the limit full
		c.ExpectClosed(hangGuard)
	})
	done := make(chan *ProducerTransaction, 1)
	require.NoError(t, p.PublishAsync("t", []byte("held"), done))

	stopped := make(chan struct{})
	go func() {
		p.Stop() // waits stop_timeout for the unanswered publish
		close(stopped)
	}()
	// A publish waiting for room returns once Stop has begun.
	assert.Same(t, ErrStopped, publishWithin(t, p, "t", "waits"))
	assert.Same(t, ErrStopped, p.TryPublishAsync("t", []byte("try"), done))

	recvWithin(t, stopped, "Stop")
	tx := recvWithin(t, done, "the held publish's result")
	assert.ErrorIs(t, tx.Error, ErrUnknownOutcome)
	s.Wait()
}

// Bug 9: a message nsqd refused (ErrProtocol) was reported ErrNeverSent
// ("safe to retry") when the reconnect that followed failed: the failure of
// the queue overwrote its settled outcome.
func TestRefusedOutcomeSurvivesAFailedReconnect(t *testing.T) {
	const reason = "E_BAD_MESSAGE MPUB message too big 2000 > 1024"
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)

	done := make(chan *ProducerTransaction, 3)
	for i, b := range [][]byte{[]byte("m0"), make([]byte, 2000), []byte("m2")} {
		require.NoError(t, p.PublishAsync("big", b, done, i))
	}
	waitAccepted(t, p)

	c := s.Accept()
	c.Handshake(nil)
	require.Len(t, c.Expect("MPUB").Messages, 3)
	c.Error(reason)
	c.Close()
	// The reconnect fails during the handshake.
	s.Accept().Close()

	var txs []*ProducerTransaction
	for range 3 {
		txs = append(txs, recvWithin(t, done, "PublishAsync result"))
	}
	assert.ErrorIs(t, txs[0].Error, ErrNeverSent)
	assert.Equal(t, ErrProtocol{Reason: reason}, txs[1].Error, "nsqd's refusal stands")
	assert.ErrorIs(t, txs[2].Error, ErrNeverSent)
}

// Bug 5: Flush with nothing pending dialled (waiting out any backoff) and,
// with nsqd down, returned the dial error; a Flush behind publishes that
// failed returned their connection error. Flush returns nil, ctx's error
// or ErrStopped, and never dials.
func TestFlushNeverDialsNorFailsWithTheConnection(t *testing.T) {
	p := newTestProducer(t, "127.0.0.1:1", nil) // nothing listens there
	within(t, hangGuard, "Flush", func() { require.NoError(t, p.Flush(t.Context())) })
	assert.Zero(t, p.Stats().ConnectFailures, "Flush with nothing pending dialled")

	done := make(chan *ProducerTransaction, 1)
	require.NoError(t, p.PublishAsync("t", []byte("x"), done))
	within(t, hangGuard, "Flush", func() { require.NoError(t, p.Flush(t.Context())) })
	assert.ErrorIs(t, recvWithin(t, done, "the publish's result").Error, ErrNeverSent)
	assert.Equal(t, uint64(1), p.Stats().ConnectFailures)

	// Nothing pending again: no dial, though a backoff is running.
	within(t, hangGuard, "Flush", func() { require.NoError(t, p.Flush(t.Context())) })
	assert.Equal(t, uint64(1), p.Stats().ConnectFailures)
}

// Bug 11, stats: a transaction that had headed an automatic batch and was
// sent again as a member of a larger one kept its old count, so
// Stats().Batches and BatchedMessages counted it as a batch of its own.
func TestStatsCountAResentBatchHeadOnce(t *testing.T) {
	s := fakensqd.New(t)
	p := newTestProducer(t, s.Addr(), nil)
	done := make(chan *ProducerTransaction, 4)

	require.NoError(t, p.PublishAsync("x", []byte("x"), done))
	c := s.Accept()
	c.Handshake(nil)
	assert.Equal(t, "x", bodyOf(c.ExpectPublish()))
	require.NoError(t, p.PublishAsync("t", []byte("a"), done))
	assert.Equal(t, "a", bodyOf(c.ExpectPublish()))
	// Two writes await answers: c and d wait in the next batch, c heading
	// an MPUB of two.
	require.NoError(t, p.PublishAsync("t", []byte("c"), done))
	require.NoError(t, p.PublishAsync("t", []byte("d"), done))
	waitAccepted(t, p)
	c.Error("E_BAD_TOPIC PUB topic name x is not valid")
	c.Close()

	c = s.Accept()
	c.Handshake(nil)
	mpub := c.Expect("MPUB")
	assert.Equal(t, []string{"a", "c", "d"}, strs(mpub.Messages))
	c.OK()
	assert.IsType(t, ErrProtocol{}, recvWithin(t, done, "x's result").Error)
	for range 3 {
		assert.NoError(t, recvWithin(t, done, "result").Error)
	}
	st := p.Stats()
	assert.Equal(t, uint64(1), st.Batches)
	assert.Equal(t, uint64(3), st.BatchedMessages)
}

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

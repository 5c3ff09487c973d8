package nsq

import (
	"bytes"
	"testing"
	"testing/synctest"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A pool node writes a second batch while one awaits nsqd's answer only
// when that batch is full: a node sees only its share of the sync callers,
// and the publishes queued meanwhile leave together once the answer comes
// instead of in batches half as large (a Producer writes the second batch
// at once). A full batch goes out without waiting.
func TestPoolNodeSecondWriteWaitsForAFullBatch(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p, err := NewProducerPool([]string{s.Addr()}, poolConfig(t, "max_batch_messages", 4))
		require.NoError(t, err)
		p.SetLogger(&testLogger{t: t}, LogLevelInfo)
		defer p.Stop()
		c := s.Accept()
		c.Handshake(nil)
		c.Expect("NOP") // the node is up once its Ping is written

		errs := make(chan error, 8)
		publish := func(body string) {
			go func() { errs <- p.Publish("t", []byte(body)) }()
			synctest.Wait() // queued behind the ones before
		}
		publish("a")
		assert.Equal(t, "PUB t [a]", wireOf(c.ExpectPublish()), "a lone publish goes at once")
		publish("b")
		publish("c")
		publish("d")
		c.OK() // a's answer
		assert.Equal(t, "MPUB t [b c d]", wireOf(c.ExpectPublish()), "queued while a awaited its answer, written together")

		// With b, c, d unanswered, a batch of max_batch_messages is full:
		// it is written before their answer.
		for _, b := range []string{"e", "f", "g", "h"} {
			publish(b)
		}
		assert.Equal(t, "MPUB t [e f g h]", wireOf(c.ExpectPublish()))
		c.OK()
		c.OK()
		for range 8 {
			require.NoError(t, <-errs)
		}
		st := p.Stats()
		assert.Equal(t, uint64(8), st.Published)
	})
}

// TryPublishAsync after Stop began returns ErrStopped, not ErrPendingFull:
// no room is coming, retrying cannot help (as a Producer's does). Found by
// TestPoolSimulation.
func TestPoolTryPublishAsyncAfterStopBegan(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p, err := NewProducerPool([]string{s.Addr()}, poolConfig(t, "max_pending", 1, "stop_timeout", "1s"))
		require.NoError(t, err)
		p.SetLogger(&testLogger{t: t}, LogLevelInfo)
		c := s.Accept()
		c.Handshake(nil)
		c.Expect("NOP")
		require.NoError(t, p.PublishAsync("t", []byte("a"), nil))
		c.Expect("PUB") // unanswered: it holds the only room
		assert.Equal(t, ErrPendingFull, p.TryPublishAsync("t", []byte("b"), nil), "before Stop")

		stopped := make(chan struct{})
		go func() { p.Stop(); close(stopped) }()
		synctest.Wait() // Stop waits for a's answer
		assert.Equal(t, ErrStopped, p.TryPublishAsync("t", []byte("c"), nil), "after Stop began")
		c.OK()
		<-stopped
		assert.Equal(t, uint64(1), p.Stats().Published)
		assert.Equal(t, uint64(1), p.Stats().Refused, "the refusal before Stop")
	})
}

// A publish the pool accepted and that a node's Producer refuses over a
// size limit nsqd stated (E_BAD_MESSAGE ... too big) ends as a Producer's
// queued publishes do: ErrTooLarge and ErrNeverSent (it reached no nsqd),
// async or sync, and counts in Stats().NeverSent. It ended with
// ErrTooLarge alone, counted in no total of the pool's Stats. Found by
// TestPoolSimulation.
func TestPoolLearnedLimitIsNeverSent(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p, err := NewProducerPool([]string{s.Addr()}, poolConfig(t))
		require.NoError(t, err)
		p.SetLogger(&testLogger{t: t}, LogLevelInfo)
		defer p.Stop()
		c := s.Accept()
		c.Handshake(nil)
		c.Expect("NOP")

		res := make(chan error, 1)
		go func() { res <- p.Publish("t", bytes.Repeat([]byte("a"), 70)) }()
		c.ExpectPublish()
		c.Error("E_BAD_MESSAGE PUB message too big 70 > 64")
		c.Close()
		var perr ErrProtocol
		require.ErrorAs(t, <-res, &perr)

		done := make(chan *ProducerTransaction, 1)
		require.NoError(t, p.PublishAsync("t", bytes.Repeat([]byte("b"), 100), done))
		err = (<-done).Error
		assert.ErrorIs(t, err, ErrTooLarge, "async")
		assert.ErrorIs(t, err, ErrNeverSent, "async")
		err = p.Publish("t", bytes.Repeat([]byte("c"), 100))
		assert.ErrorIs(t, err, ErrTooLarge, "sync")
		assert.ErrorIs(t, err, ErrNeverSent, "sync")

		st := p.Stats()
		assert.Equal(t, uint64(2), st.NeverSent)
		assert.Equal(t, map[string]uint64{"E_BAD_MESSAGE": 1}, st.NsqdErrors)
	})
}

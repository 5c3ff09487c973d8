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

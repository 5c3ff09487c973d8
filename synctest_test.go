package nsq

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of time-driven behaviour on virtual time: each runs in a
// testing/synctest bubble, against the fake nsqd on the in-memory network
// (fakensqd.NewMem). Time advances only when every goroutine of the bubble
// is blocked, so timeouts and backoffs cost no wall time and are asserted
// exactly, and synctest.Wait replaces polling for "the router has taken
// everything".

// inBubble runs f in a synctest bubble. The pool of sync transactions is
// emptied before and after (see resetSyncTxPool).
func inBubble(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	resetSyncTxPool()
	defer resetSyncTxPool()
	synctest.Test(t, f)
}

// Connection attempts that fail come no faster than the backoff: the n-th
// consecutive failure waits between half and all of reconnect_backoff
// doubled n-1 times, capped at max_reconnect_backoff, jittered.
func TestVirtualBackoffGrowthAndJitter(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "reconnect_backoff", "100ms", "max_reconnect_backoff", "1s"))

		const attempts = 12
		var at []time.Time
		for range attempts {
			res := publishInBackground(p, "backoff", "x")
			c := s.Accept() // waits out the backoff, on virtual time
			at = append(at, time.Now())
			c.Close() // before IDENTIFY: the attempt fails
			err := <-res
			require.ErrorIs(t, err, ErrNeverSent)
			assert.ErrorIs(t, err, ErrNotConnected)
		}
		seen := map[time.Duration]bool{}
		for n := 1; n < attempts; n++ {
			full := min(100*time.Millisecond<<(n-1), time.Second)
			gap := at[n].Sub(at[n-1])
			assert.GreaterOrEqual(t, gap, full/2, "attempt %d after %d failures", n+1, n)
			assert.Less(t, gap, full, "attempt %d after %d failures", n+1, n)
			if full == time.Second {
				seen[gap] = true
			}
		}
		assert.Greater(t, len(seen), 1, "the capped backoff is jittered: %v", seen)
		assert.Equal(t, uint64(attempts), p.Stats().ConnectFailures)
	})
}

// Stop while nsqd withholds an answer: Stop gives up after exactly
// stop_timeout, the publish has an unknown outcome, nothing is left running.
func TestVirtualStopWhileAnswerWithheld(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "stop_timeout", "200ms"))

		res := publishInBackground(p, "withheld", "x")
		c := s.Accept()
		c.Handshake(nil)
		c.Expect("PUB")

		start := time.Now()
		p.Stop()
		assert.Equal(t, 200*time.Millisecond, time.Since(start), "Stop waits stop_timeout for the answer, no more")

		err := <-res
		require.ErrorIs(t, err, ErrUnknownOutcome)
		assert.ErrorIs(t, err, errStopTimeout)
		assert.Equal(t, "not connected: connection lost before nsqd answered, outcome unknown: nsq: Stop gave up waiting for nsqd's answers (stop_timeout)", err.Error())
		c.ExpectClosed(time.Nanosecond) // closed already
		requireNoLeaks(t)
	})
}

// Stop while connecting: the handshake is abandoned after exactly
// stop_timeout, the publish was never sent.
func TestVirtualStopWhileConnecting(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "stop_timeout", "100ms"))

		res := publishInBackground(p, "connecting", "x")
		c := s.Accept()
		c.ReadMagic()
		c.Expect("IDENTIFY") // never answered

		start := time.Now()
		p.Stop()
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		err := <-res
		require.ErrorIs(t, err, ErrNeverSent)
		assert.ErrorIs(t, err, errStopTimeout)
		assert.Equal(t, "not connected: never sent to nsqd: nsq: Stop gave up waiting for nsqd's answers (stop_timeout)", err.Error())
		c.ExpectClosed(time.Nanosecond)
		requireNoLeaks(t)
	})
}

// A server that never answers: the publish fails exactly read_timeout after
// it was written, with an unknown outcome.
func TestVirtualReadTimeout(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "read_timeout", "200ms", "heartbeat_interval", -1))

		s.Go(func(c *fakensqd.Conn) {
			c.Handshake(nil)
			c.Expect("PUB")
			c.ExpectClosed(time.Second) // no answer, no heartbeat
		})
		start := time.Now()
		err := p.Publish("silent", []byte("x"))
		assert.Equal(t, 200*time.Millisecond, time.Since(start))
		s.Wait()

		require.ErrorIs(t, err, ErrUnknownOutcome)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.Contains(t, err.Error(), "nsqd at "+s.Addr()+" did not answer within read_timeout (200ms)")
	})
}

// A server that stops reading: the write fails exactly write_timeout after
// it began, and every publish completes, none of them with success.
func TestVirtualWriteTimeout(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		const n = 8
		body := bytes.Repeat([]byte("x"), 1<<20) // 8 MiB in all: far more than the connection holds unread
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "write_timeout", "100ms", "max_pending", 1000))

		done := make(chan *ProducerTransaction, n)
		for i := range n {
			require.NoError(t, p.PublishAsync("stall", body, done, i))
		}
		// The router has taken them all, and the connection waits for the
		// IDENTIFY answer: they leave in one write.
		synctest.Wait()
		c := s.Accept()
		c.Handshake(nil) // and then never reads again
		start := time.Now()

		var txs []*ProducerTransaction
		for range n {
			txs = append(txs, <-done)
		}
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		for i, tx := range txs {
			assert.Equal(t, []any{i}, tx.Args)
			require.Error(t, tx.Error, "publish %d", i)
			assert.True(t, errors.Is(tx.Error, ErrUnknownOutcome) || errors.Is(tx.Error, ErrNeverSent), "publish %d: %v", i, tx.Error)
		}
		err := txs[n-1].Error
		assert.ErrorIs(t, err, ErrUnknownOutcome, "queued before the connection was up, the publishes were all handed to the writer")
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.Contains(t, err.Error(), "did not take our bytes within write_timeout (100ms)")
		st := p.Stats()
		assert.Equal(t, uint64(n), st.UnknownOutcome+st.NeverSent)
		assert.Zero(t, st.Published)
	})
}

// Heartbeats keep an idle connection alive for as long as they come, each
// answered with one NOP; once they stop, the connection ends exactly
// read_timeout after the last frame, saying why.
func TestVirtualHeartbeats(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "read_timeout", "1s", "heartbeat_interval", "500ms"))
		lines := producerLogLines(p)

		res := publishInBackground(p, "hb", "first")
		c := s.Accept()
		c.Handshake(nil)
		assert.Equal(t, "first", bodyOf(c.Expect("PUB")))
		c.OK()
		require.NoError(t, <-res)

		for range 20 { // 10 s of idleness, ten times read_timeout
			time.Sleep(500 * time.Millisecond)
			c.Heartbeat()
			c.Expect("NOP")
		}
		res = publishInBackground(p, "hb", "second")
		assert.Equal(t, "second", bodyOf(c.Expect("PUB")), "the same connection")
		c.OK()
		require.NoError(t, <-res)
		st := p.Stats()
		assert.Equal(t, uint64(20), st.Heartbeats)
		assert.Equal(t, uint64(1), st.Connects)

		// nsqd goes quiet.
		start := time.Now()
		c.ExpectClosed(5 * time.Second)
		assert.Equal(t, time.Second, time.Since(start))
		waitLine(t, lines, "no heartbeat from nsqd at "+s.Addr()+" within read_timeout (1s)", time.Second)
	})
}

// Results nobody takes hold Stop for stop_timeout, no more: then the
// couriers give up and drop them (and say so), and nothing is left running.
func TestVirtualCourierGiveUp(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), testConfig(t, "stop_timeout", "300ms", "auto_batch", false))
		lines := producerLogLines(p)
		s.Go(func(c *fakensqd.Conn) {
			c.Handshake(nil)
			c.ServePublishes(3)
			c.ExpectClosed(time.Second)
		})

		unread := make(chan *ProducerTransaction) // nobody reads it
		for i := range 3 {
			require.NoError(t, p.PublishAsync("unread", []byte{'a' + byte(i)}, unread, i))
		}
		require.NoError(t, p.Flush(t.Context()), "all three answered")
		// Answered but not taken: they wait for their doneChan alone and
		// hold no room under the producer's pending limits (issue 8 bug 6).
		assert.Zero(t, p.Stats().Pending, "answered but not taken")

		start := time.Now()
		p.Stop()
		assert.Equal(t, 300*time.Millisecond, time.Since(start))
		waitLine(t, lines, "3 results dropped after stop_timeout", time.Second)
		select {
		case tx := <-unread:
			t.Fatalf("a result arrived after Stop returned: %v", tx.Args)
		default:
		}
		st := p.Stats()
		assert.Zero(t, st.Pending)
		assert.Equal(t, uint64(3), st.Published)
		s.Wait()
		requireNoLeaks(t)
	})
}

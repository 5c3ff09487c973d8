package nsq

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for two bugs the hostile-server simulation found in the
// Conn's handshake and teardown (sim findings F6 and F7).

// F7: only a response frame answers IDENTIFY. A frame of another type that
// holds "OK" used to complete the handshake as "an nsqd without feature
// negotiation"; nsqd's real answer then arrived with a publish pending and
// was blamed on it.
func TestVirtualIdentifyAnsweredWithAnotherFrameType(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)

		res := publishInBackground(p, "frames", "x")
		c := s.Accept()
		c.ReadMagic()
		c.Expect("IDENTIFY")
		c.Frame(7, []byte("OK"))
		c.ExpectClosed(time.Second)

		err := <-res
		var ierr ErrIdentify
		require.ErrorAs(t, err, &ierr)
		assert.Equal(t, ErrIdentify{Reason: "nsqd answered IDENTIFY with a frame of type 7"}, err)
		assert.ErrorIs(t, err, ErrNeverSent)
		assert.Equal(t, uint64(1), p.Stats().ConnectFailures)
	})
}

// F6: teardown closes the transport, not the TLS layer. tls.Conn.Close
// writes a close_notify under a 5 s deadline of its own, which blocks when
// nsqd has stopped reading: a connection whose write timed out took 5 s
// more to end, and Stop overran stop_timeout.
func TestVirtualWriteTimeoutOnAStalledTLSConnection(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		cfg := testConfig(t, "tls_v1", true, "tls_insecure_skip_verify", true, "write_timeout", "100ms")
		p := newTestProducer(t, s.Addr(), cfg)

		body := bytes.Repeat([]byte("x"), 4<<20) // far more than the pipe holds unread
		done := make(chan *ProducerTransaction, 1)
		require.NoError(t, p.PublishAsync("stall", body, done))
		c := s.Accept()
		resp := fakensqd.DefaultIdentifyResponse()
		resp["tls_v1"] = true
		c.ReadMagic()
		c.Expect("IDENTIFY")
		js, err := json.Marshal(resp)
		require.NoError(t, err)
		c.Respond(string(js))
		require.NoError(t, c.UpgradeTLS(simTLSConfig()))
		c.OK()
		// The fake never reads again: the write goroutine blocks in a TLS
		// write of the body until write_timeout.
		synctest.Wait()
		start := time.Now()
		tx := <-done
		assert.Equal(t, 100*time.Millisecond, time.Since(start), "the connection ends at write_timeout")
		require.ErrorIs(t, tx.Error, ErrUnknownOutcome)
		assert.ErrorIs(t, tx.Error, os.ErrDeadlineExceeded)

		start = time.Now()
		p.Stop()
		assert.Zero(t, time.Since(start), "nothing is left for Stop to wait for")
		requireNoLeaks(t)
	})
}

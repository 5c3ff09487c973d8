package nsq

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deadlineCounter counts the deadlines set on a net.Conn.
type deadlineCounter struct {
	net.Conn
	reads, writes atomic.Int64
}

func (c *deadlineCounter) SetDeadline(t time.Time) error {
	c.reads.Add(1)
	c.writes.Add(1)
	return c.Conn.SetDeadline(t)
}

func (c *deadlineCounter) SetReadDeadline(t time.Time) error {
	c.reads.Add(1)
	return c.Conn.SetReadDeadline(t)
}

func (c *deadlineCounter) SetWriteDeadline(t time.Time) error {
	c.writes.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

// In a stream of sync publishes (one command written, then answered, with
// heartbeats on) the read and write deadlines are moved only once they
// would move by a millisecond: not three and one times a publish. Virtual
// time stands still while the bubble has work, so a burst takes no time.
func TestConnDeadlinesMovedOncePerMillisecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, server := net.Pipe()
		counter := &deadlineCounter{Conn: client}
		s := &pipeNsqd{nc: server, cmds: make(chan string, 64)}
		d := newConnRecorder()
		conn := NewConn("nsqd.test:4150", NewConfig(), d)
		conn.dial = func(context.Context, string) (net.Conn, error) { return counter, nil }
		go s.serve(nil)
		_, err := conn.Connect()
		require.NoError(t, err)
		require.Equal(t, "IDENTIFY", <-s.cmds)
		publish := func() {
			require.NoError(t, conn.WriteCommand(Publish("t", []byte("x"))))
			assert.Equal(t, "PUB t", <-s.cmds)
			s.frame(FrameTypeResponse, "OK")
			assert.Equal(t, "OK", <-d.responses)
		}
		reads, writes := counter.reads.Load(), counter.writes.Load()

		for range 100 {
			publish()
		}
		assert.Equal(t, int64(0), counter.reads.Load()-reads, "read deadlines in a burst: the one set at connect a read_timeout away stays")
		assert.Equal(t, int64(1), counter.writes.Load()-writes, "write deadlines in a burst")

		time.Sleep(time.Millisecond - time.Nanosecond)
		publish()
		assert.Equal(t, int64(0), counter.reads.Load()-reads, "read deadlines within a millisecond")
		assert.Equal(t, int64(1), counter.writes.Load()-writes, "write deadlines within a millisecond")

		time.Sleep(time.Nanosecond)
		publish()
		assert.Equal(t, int64(1), counter.reads.Load()-reads, "read deadlines a millisecond on: moved once")
		assert.Equal(t, int64(2), counter.writes.Load()-writes, "write deadlines a millisecond on: moved once")

		assert.True(t, quiet(d))
		conn.Close()
		<-d.closed
	})
}

// A batch of several MiB that nsqd reads slowly, each MiB within
// write_timeout but the whole longer than read_timeout: the read deadline
// left in place when the write began (it fell well after the write
// deadline) is removed once a new write deadline for the next MiB comes
// near it, so no read deadline ends the connection while the batch is
// being written, as before.
func TestConnLongBatchOutlastsTheReadDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			wt   = 100 * time.Millisecond
			rt   = 3 * wt
			n    = 6
			pace = 9 * wt / 10 // per command: each within write_timeout, all of them 5.4 wt
		)
		cfg := readTimeoutConfig(rt, wt)
		cfg.WriteTimeout = wt
		client, server := net.Pipe()
		conn := NewConn("nsqd.test:4150", cfg, newConnRecorder())
		d := conn.delegate.(*connRecorder)
		conn.dial = func(context.Context, string) (net.Conn, error) { return client, nil }
		cmds := make(chan string, n)
		go func() { // nsqd: answers IDENTIFY, then reads a command every pace
			defer close(cmds)
			br := bufio.NewReader(server)
			if _, err := io.ReadFull(br, make([]byte, 4)); err != nil {
				return
			}
			for i := 0; ; i++ {
				if i > 0 {
					time.Sleep(pace)
				}
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				var size [4]byte
				if _, err := io.ReadFull(br, size[:]); err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, br, int64(binary.BigEndian.Uint32(size[:]))); err != nil {
					return
				}
				if i == 0 {
					server.Write(fakensqd.AppendFrame(nil, FrameTypeResponse, []byte(`{"max_rdy_count":2500}`)))
					continue
				}
				cmds <- strings.TrimSuffix(line, "\n")
			}
		}()
		_, err := conn.Connect()
		require.NoError(t, err)
		start := time.Now()

		// n PUBs of just over a MiB each, in one batch: the write deadline
		// moves after each.
		var txs []*ProducerTransaction
		for range n {
			txs = append(txs, &ProducerTransaction{kind: kindPUB, topic: "big", body: make([]byte, 1<<20+1), n: 1})
		}
		done := make(chan error, 1)
		conn.writeChan <- writeRequest{txs: txs, done: done}
		require.NoError(t, <-done)
		assert.Equal(t, n*pace, time.Since(start), "the batch took longer than read_timeout to write")
		for range n {
			assert.Equal(t, "PUB big", <-cmds)
		}
		synctest.Wait()
		assert.True(t, quiet(d), "no read deadline ended the connection during the write")
		for range n {
			server.Write(fakensqd.AppendFrame(nil, FrameTypeResponse, []byte("OK")))
			assert.Equal(t, "OK", <-d.responses)
		}
		assert.True(t, quiet(d))
		conn.Close()
		<-d.closed
		for range cmds { // until the server has read the end of the stream
		}
	})
}

package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
)

// A rawClient publishes over a bare NSQ V2 connection with no library: the
// ceiling of a scenario, doing the work the library does in it (encoding
// every command, copying every body into the write buffer, reading every
// answer) and nothing else.
type rawClient struct {
	name string // report row
	// sync clients wait for each answer before the next command, and time
	// every command.
	sync bool
	run  func(c *rawConn, b budget, h *hist) (int, error)
}

// slug is the client's name as a sub-benchmark name: its words joined by
// dashes.
func (rc rawClient) slug() string {
	return strings.Join(strings.FieldsFunc(rc.name, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}), "-")
}

var (
	// rawSyncPUB: one goroutine writes a PUB, then reads its answer. No
	// client doing one PUB at a time can do better.
	rawSyncPUB = rawClient{name: "raw PUB, write then read", sync: true,
		run: func(c *rawConn, b budget, h *hist) (int, error) { return c.syncDirect(b, 1, h) }}
	// rawSyncPUBRW: the caller hands each PUB to a write goroutine and
	// waits for a read goroutine to hand back the answer: the Conn's
	// shape, without a router.
	rawSyncPUBRW = rawClient{name: "raw PUB, write and read goroutines", sync: true,
		run: func(c *rawConn, b budget, h *hist) (int, error) { return c.syncGoroutines(b, 1, true, h) }}
	// rawSyncPUBReader: the caller writes each PUB itself and waits for a
	// read goroutine to hand back the answer: one handoff per PUB.
	rawSyncPUBReader = rawClient{name: "raw PUB, read goroutine", sync: true,
		run: func(c *rawConn, b budget, h *hist) (int, error) { return c.syncGoroutines(b, 1, false, h) }}
	rawSyncMPUB = rawClient{name: "raw MPUB 100, write then read", sync: true,
		run: func(c *rawConn, b budget, h *hist) (int, error) { return c.syncDirect(b, mpubSize, h) }}
	rawSyncMPUBRW = rawClient{name: "raw MPUB 100, write and read goroutines", sync: true,
		run: func(c *rawConn, b budget, h *hist) (int, error) { return c.syncGoroutines(b, mpubSize, true, h) }}
	// rawPipelinedPUB: PUBs written back to back without waiting, as
	// go-nsq's PublishAsync sends them; a read goroutine counts the
	// answers.
	rawPipelinedPUB  = rawPipelined("raw PUB, pipelined", 1)
	rawPipelinedMPUB = rawPipelinedMPUBOf(mpubSize)
)

// rawPipelinedMPUBOf: MPUBs of per messages written back to back without
// waiting; a read goroutine counts the answers.
func rawPipelinedMPUBOf(per int) rawClient {
	return rawPipelined(fmt.Sprintf("raw MPUB %d, pipelined", per), per)
}

func rawPipelined(name string, per int) rawClient {
	return rawClient{name: name,
		run: func(c *rawConn, b budget, _ *hist) (int, error) { return c.pipelined(b, per) }}
}

// rawConn is a bare NSQ V2 connection.
type rawConn struct {
	net.Conn
	r   *bufio.Reader
	buf []byte  // the commands being written, reused
	hdr [8]byte // a frame's size and type
}

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte("  V2")); err != nil {
		c.Close()
		return nil, err
	}
	return &rawConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

// dialWarm returns a raw connection that has published one message (not
// measured), as the libraries' producers have when their runs start.
func dialWarm(t testing.TB, d *nsqdtest.Nsqd) *rawConn {
	t.Helper()
	c, err := dialRaw(d.TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	c.buf = appendCommand(c.buf[:0], 1)
	if _, err := c.Write(c.buf); err == nil {
		err = c.readOK()
	}
	if err != nil {
		c.Close()
		t.Fatalf("raw: warm-up PUB: %v", err)
	}
	return c
}

// appendCommand appends a PUB (k == 1) or an MPUB of k bodies to buf.
func appendCommand(buf []byte, k int) []byte {
	if k == 1 {
		// PUB <topic>\n [ 4-byte size ][ body ]
		buf = append(buf, "PUB "+topic+"\n"...)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)))
		return append(buf, body...)
	}
	// MPUB <topic>\n [ 4-byte body size ][ 4-byte count ]
	//                [ 4-byte size ][ body ] ... count times
	buf = append(buf, "MPUB "+topic+"\n"...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(4+k*(4+len(body))))
	buf = binary.BigEndian.AppendUint32(buf, uint32(k))
	for range k {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)))
		buf = append(buf, body...)
	}
	return buf
}

// syncDirect: the calling goroutine writes one command of per messages,
// reads its answer, and so on.
func (c *rawConn) syncDirect(b budget, per int, h *hist) (int, error) {
	sent := 0
	for {
		start := time.Now()
		k := b.next(sent, per)
		c.buf = appendCommand(c.buf[:0], k)
		if _, err := c.Write(c.buf); err != nil {
			return sent, err
		}
		if err := c.readOK(); err != nil {
			return sent, err
		}
		now := time.Now()
		h.add(now.Sub(start))
		sent += k
		if b.over(sent, now) {
			return sent, nil
		}
	}
}

// syncGoroutines: one command of per messages at a time, its answer handed
// back to the caller by a read goroutine. With writer, the caller also
// hands the command to a write goroutine instead of writing it itself.
func (c *rawConn) syncGoroutines(b budget, per int, writer bool, h *hist) (int, error) {
	answers := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop) // the read goroutine ends when the connection closes
	go func() {
		for {
			err := c.readOK()
			select {
			case answers <- err:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	writeDirect := func(k int) error {
		c.buf = appendCommand(c.buf[:0], k)
		_, err := c.Write(c.buf)
		return err
	}
	write := writeDirect
	var written chan error // the write goroutine's error; nil without one
	if writer {
		commands := make(chan int, 1)
		written = make(chan error, 1)
		defer close(commands)
		go func() {
			for k := range commands {
				if err := writeDirect(k); err != nil {
					written <- err
					return
				}
			}
		}()
		write = func(k int) error {
			commands <- k
			return nil
		}
	}
	sent := 0
	for {
		start := time.Now()
		k := b.next(sent, per)
		if err := write(k); err != nil {
			return sent, err
		}
		select {
		case err := <-answers:
			if err != nil {
				return sent, err
			}
		case err := <-written:
			return sent, err
		}
		now := time.Now()
		h.add(now.Sub(start))
		sent += k
		if b.over(sent, now) {
			return sent, nil
		}
	}
}

// rawChunk is about how many messages go into one write when pipelining:
// whole commands, at least one.
const rawChunk = 1000

// pipelined writes commands of per messages back to back, several to a
// write, while a read goroutine counts the answers. It returns once every
// command is answered.
func (c *rawConn) pipelined(b budget, per int) (int, error) {
	var (
		answered atomic.Int64
		total    atomic.Int64 // commands written, once the writing is over
		done     = make(chan struct{})
		rerr     error // set before done is closed
	)
	total.Store(math.MaxInt64)
	go func() {
		defer close(done)
		for {
			if rerr = c.readOK(); rerr != nil {
				return
			}
			if answered.Add(1) == total.Load() {
				return
			}
		}
	}()
	perWrite := max(1, rawChunk/per)
	sent, cmds := 0, 0
	var werr error
	for {
		c.buf = c.buf[:0]
		for range perWrite {
			k := b.next(sent, per)
			c.buf = appendCommand(c.buf, k)
			sent += k
			cmds++
			if b.msgs > 0 && sent >= b.msgs {
				break
			}
		}
		if _, werr = c.Write(c.buf); werr != nil {
			break
		}
		if b.over(sent, time.Now()) {
			break
		}
	}
	if werr != nil {
		c.Close() // unblocks the reader; its error (an E_ frame) says more
		<-done
		return sent, errors.Join(rerr, werr)
	}
	// The reader ends on the last answer if it sees total by then;
	// otherwise we see its count reach total here (it is left reading
	// until the connection closes).
	total.Store(int64(cmds))
	if answered.Load() == int64(cmds) {
		return sent, nil
	}
	<-done
	return sent, rerr
}

// readOK reads frames until an OK response. Frames are [ 4-byte size ]
// [ 4-byte type ][ data ]; type 0 is a response ("OK", or "_heartbeat_",
// which is skipped: a run is far shorter than nsqd's read timeout), type 1
// an error.
func (c *rawConn) readOK() error {
	for {
		if _, err := readFull(c.r, c.hdr[:]); err != nil {
			return fmt.Errorf("raw: %w", err)
		}
		size := binary.BigEndian.Uint32(c.hdr[:4])
		if size < 4 || size > 1<<16 {
			return fmt.Errorf("raw: bad frame size %d", size)
		}
		data, err := c.r.Peek(int(size - 4))
		if err != nil {
			return fmt.Errorf("raw: %w", err)
		}
		typ := binary.BigEndian.Uint32(c.hdr[4:])
		ok, heartbeat := typ == 0 && string(data) == "OK", typ == 0 && string(data) == "_heartbeat_"
		if !ok && !heartbeat {
			return fmt.Errorf("raw: unexpected frame (type %d): %s", typ, data)
		}
		c.r.Discard(len(data))
		if ok {
			return nil
		}
	}
}

// readFull is io.ReadFull for a bufio.Reader, without the interface
// conversion that makes io.ReadFull allocate here.
func readFull(r *bufio.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

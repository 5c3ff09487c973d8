package fakensqd

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// In-memory network: connections that behave like TCP sockets closely
// enough for a client's tests (buffered writes that block when the peer's
// receive buffer is full, deadlines, close, reset), made of channels and
// timers only, so that they work inside a testing/synctest bubble, where a
// goroutine blocked on one is durably blocked and deadlines run on the
// bubble's virtual clock.
//
// A [Listener] listens on a name such as "fakensqd-mem-3:4150"; [DialMem]
// reaches it. [IsMemAddr] tells such names apart, so a client's dial hook
// can send them here and every other address to the real network.

// MemNetwork is the network name of in-memory addresses.
const MemNetwork = "fakensqd-mem"

// memBufferSize is how many bytes one direction of an in-memory connection
// holds unread before the writer blocks: about what loopback TCP holds.
const memBufferSize = 256 << 10

var memListeners struct {
	mu   sync.Mutex
	next int
	m    map[string]*Listener
}

// IsMemAddr reports whether addr names an in-memory listener of this
// package (whether or not it is still listening).
func IsMemAddr(addr string) bool { return strings.HasPrefix(addr, MemNetwork+"-") }

// Listener is an in-memory net.Listener. Create it with [ListenMem].
type Listener struct {
	addr    memAddr
	backlog chan *memConn
	done    chan struct{}
	once    sync.Once
}

// ListenMem starts an in-memory listener on a fresh address. Inside a
// synctest bubble, create it inside the bubble.
func ListenMem() *Listener {
	memListeners.mu.Lock()
	defer memListeners.mu.Unlock()
	memListeners.next++
	l := &Listener{
		addr:    memAddr(fmt.Sprintf("%s-%d:4150", MemNetwork, memListeners.next)),
		backlog: make(chan *memConn, 128),
		done:    make(chan struct{}),
	}
	if memListeners.m == nil {
		memListeners.m = make(map[string]*Listener)
	}
	memListeners.m[string(l.addr)] = l
	return l
}

// Accept returns the next connection dialled to the listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.backlog:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: MemNetwork, Addr: l.addr, Err: net.ErrClosed}
	}
}

// Close stops the listener: Accept returns an error, dials are refused,
// and connections dialled but not yet accepted are reset.
func (l *Listener) Close() error {
	l.once.Do(func() {
		memListeners.mu.Lock()
		delete(memListeners.m, string(l.addr))
		memListeners.mu.Unlock()
		close(l.done)
		for {
			select {
			case c := <-l.backlog:
				c.Reset()
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.addr }

// DialMem connects to the in-memory listener at addr. It fails with an
// error wrapping syscall.ECONNREFUSED when nothing listens there.
func DialMem(ctx context.Context, addr string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "dial", Net: MemNetwork, Addr: memAddr(addr), Err: err}
	}
	memListeners.mu.Lock()
	l := memListeners.m[addr]
	memListeners.mu.Unlock()
	if l == nil {
		return nil, &net.OpError{Op: "dial", Net: MemNetwork, Addr: memAddr(addr), Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	client, server := memPipe(memAddr(addr+"-client"), l.addr)
	select {
	case l.backlog <- server:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
		client.Close()
		return nil, &net.OpError{Op: "dial", Net: MemNetwork, Addr: l.addr, Err: ctx.Err()}
	}
	return nil, &net.OpError{Op: "dial", Net: MemNetwork, Addr: l.addr, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

type memAddr string

func (a memAddr) Network() string { return MemNetwork }
func (a memAddr) String() string  { return string(a) }

// memLink is the state shared by the two ends of an in-memory connection.
// One mutex for both directions keeps it simple; changed is closed and
// replaced whenever anything a blocked call may wait for changes.
type memLink struct {
	mu      sync.Mutex
	changed chan struct{}
	buf     [2][]byte // buf[i]: bytes sent to end i, not yet read
	eof     [2]bool   // end i will read EOF once buf[i] is drained: the peer closed
	reset   [2]bool   // end i was reset by its peer: reads and writes fail at once
	closed  [2]bool   // end i was closed by its owner
	rdl     [2]time.Time
	wdl     [2]time.Time
	gone    [2]chan struct{} // gone[i] is closed once end i is closed or reset
}

func (l *memLink) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// memConn is one end of an in-memory connection.
type memConn struct {
	link          *memLink
	me            int // 0 or 1
	local, remote memAddr
}

func memPipe(clientAddr, serverAddr memAddr) (client, server *memConn) {
	l := &memLink{changed: make(chan struct{}), gone: [2]chan struct{}{make(chan struct{}), make(chan struct{})}}
	return &memConn{link: l, me: 0, local: clientAddr, remote: serverAddr},
		&memConn{link: l, me: 1, local: serverAddr, remote: clientAddr}
}

func (c *memConn) peer() int { return 1 - c.me }

func (c *memConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: MemNetwork, Source: c.local, Addr: c.remote, Err: err}
}

// wait blocks until the link changes or deadline (zero: none) passes,
// with l.mu held on entry and on return. It returns false once the
// deadline has passed.
func (l *memLink) wait(deadline time.Time) bool {
	ch := l.changed
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	l.mu.Unlock()
	defer l.mu.Lock()
	select {
	case <-ch:
		return true
	case <-timeout:
		return false
	}
}

func (c *memConn) Read(b []byte) (int, error) {
	l := c.link
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		switch {
		case l.closed[c.me]:
			return 0, c.opError("read", net.ErrClosed)
		case l.reset[c.me]:
			return 0, c.opError("read", os.NewSyscallError("read", syscall.ECONNRESET))
		case len(l.buf[c.me]) > 0:
			n := copy(b, l.buf[c.me])
			l.buf[c.me] = l.buf[c.me][n:]
			l.notifyLocked()
			return n, nil
		case len(b) == 0:
			return 0, nil
		case l.eof[c.me]:
			return 0, io.EOF
		}
		if !deadlineOK(l.rdl[c.me]) || !l.wait(l.rdl[c.me]) && !deadlineOK(l.rdl[c.me]) {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
	}
}

func deadlineOK(d time.Time) bool { return d.IsZero() || time.Now().Before(d) }

func (c *memConn) Write(b []byte) (int, error) {
	l := c.link
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for {
		p := c.peer()
		switch {
		case l.closed[c.me]:
			return n, c.opError("write", net.ErrClosed)
		case l.reset[c.me]:
			return n, c.opError("write", os.NewSyscallError("write", syscall.ECONNRESET))
		case l.closed[p] || l.eof[p]:
			// The peer will never read: a reset, as TCP answers data sent
			// to a closed socket.
			return n, c.opError("write", os.NewSyscallError("write", syscall.EPIPE))
		case n == len(b):
			return n, nil
		case len(l.buf[p]) < memBufferSize:
			k := min(len(b)-n, memBufferSize-len(l.buf[p]))
			l.buf[p] = append(l.buf[p], b[n:n+k]...)
			n += k
			l.notifyLocked()
			continue
		}
		if !deadlineOK(l.wdl[c.me]) || !l.wait(l.wdl[c.me]) && !deadlineOK(l.wdl[c.me]) {
			return n, c.opError("write", os.ErrDeadlineExceeded)
		}
	}
}

// Close closes this end: the peer reads what was sent, then EOF; its writes
// fail.
func (c *memConn) Close() error {
	l := c.link
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed[c.me] {
		return nil
	}
	l.closed[c.me] = true
	close(l.gone[c.me])
	l.buf[c.me] = nil
	l.eof[c.peer()] = true
	l.notifyLocked()
	return nil
}

// Reset closes this end and makes the peer's reads and writes fail with
// ECONNRESET at once, dropping what it had not read, like a TCP RST.
func (c *memConn) Reset() {
	l := c.link
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed[c.me] {
		l.closed[c.me] = true
		close(l.gone[c.me])
		l.buf[c.me] = nil
		if !l.closed[c.peer()] {
			l.reset[c.peer()] = true
			l.buf[c.peer()] = nil
		}
	}
	l.notifyLocked()
}

func (c *memConn) LocalAddr() net.Addr  { return c.local }
func (c *memConn) RemoteAddr() net.Addr { return c.remote }

func (c *memConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	l := c.link
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rdl[c.me] = t
	l.notifyLocked()
	return nil
}

func (c *memConn) SetWriteDeadline(t time.Time) error {
	l := c.link
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wdl[c.me] = t
	l.notifyLocked()
	return nil
}

// resetter is implemented by connections that can be reset.
type resetter interface{ Reset() }

var _ resetter = (*memConn)(nil)

package fakensqd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

const (
	// DefaultAcceptTimeout is how long [Server.Accept] and [Server.Go]
	// wait for a client to connect.
	DefaultAcceptTimeout = 10 * time.Second
	// DefaultReadTimeout is how long a Conn waits for a command or the
	// magic unless [Conn.SetReadTimeout] says otherwise.
	DefaultReadTimeout = 5 * time.Second
	// writeTimeout bounds one write, for clients that stop reading.
	writeTimeout = 5 * time.Second
	// defaultCloseGrace is how long Close waits, after closing the sockets,
	// for scripts and Conn calls to return before reporting them stuck.
	defaultCloseGrace = 5 * time.Second
	// waitTimeout bounds Server.Wait.
	waitTimeout = 10 * time.Second
)

// ErrServerClosed is returned by [Server.AcceptTimeout] once the server is
// closed.
var ErrServerClosed = errors.New("fakensqd: server closed")

// Server is a fake nsqd listening on 127.0.0.1. It accepts connections in
// the background and queues them until [Server.Accept] or a [Server.Go]
// script takes them. Its methods are safe for concurrent use.
type Server struct {
	t  testing.TB
	ln net.Listener

	closeGrace time.Duration // set by New; tests of the package shorten it
	closeOnce  sync.Once
	closedCh   chan struct{} // closed by Close before anything else
	acceptDone chan struct{} // closed when acceptLoop returns

	mu       sync.Mutex
	closed   bool          // guarded by mu; no conn is queued once set
	finished bool          // guarded by mu; the test's cleanup is over: failures go to stderr
	nextID   int           // guarded by mu; id of the last accepted conn
	conns    []*Conn       // guarded by mu; every accepted conn, to close them
	queue    []*Conn       // guarded by mu; accepted, not yet handed out
	arrived  chan struct{} // guarded by mu; closed and replaced when a conn is queued
	scripts  []*script     // guarded by mu; every Go script
	lastTurn chan struct{} // guarded by mu; closed once the latest Go script has its conn
	inflight int           // guarded by mu; Conn and Accept calls in progress
}

// script is one [Server.Go] script.
type script struct {
	where string        // file:line of the Go call
	done  chan struct{} // closed when the script's goroutine ends
	conn  *Conn         // guarded by Server.mu; nil until accepted
}

// New starts a fake nsqd on 127.0.0.1 on a free port. The test's cleanup
// closes it (see [Server.Close]). The goroutine calling New is the test
// goroutine for the failure rule described in the package documentation.
func New(t testing.TB) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fakensqd: listen: %v", err)
	}
	return newServer(t, ln)
}

// NewMem starts a fake nsqd like [New], on an in-memory listener (see
// [ListenMem]) instead of TCP: the client must dial it with [DialMem].
// Its connections work inside a testing/synctest bubble, where its timeouts
// run on the bubble's clock; inside one, call NewMem inside the bubble.
func NewMem(t testing.TB) *Server {
	t.Helper()
	return newServer(t, ListenMem())
}

func newServer(t testing.TB, ln net.Listener) *Server {
	t.Helper()
	s := &Server{
		t:          t,
		ln:         ln,
		closeGrace: defaultCloseGrace,
		closedCh:   make(chan struct{}),
		acceptDone: make(chan struct{}),
		arrived:    make(chan struct{}),
	}
	go s.acceptLoop()
	t.Cleanup(func() {
		s.Close()
		s.mu.Lock()
		s.finished = true
		s.mu.Unlock()
	})
	return s
}

// Addr returns the address clients dial: "127.0.0.1:port", or an
// in-memory address for [NewMem].
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Accept returns the next client connection, in arrival order, waiting up to
// [DefaultAcceptTimeout] for one. It fails the test if none comes or the
// server is closed.
func (s *Server) Accept() *Conn {
	s.t.Helper()
	s.beginOp()
	defer s.endOp()
	c, err := s.accept(DefaultAcceptTimeout)
	if err != nil {
		s.fail(failFatal, "fakensqd: Accept: "+err.Error())
		return deadConn(s)
	}
	return c
}

// AcceptTimeout returns the next client connection, waiting up to d for one.
// It never fails the test: it returns an error wrapping
// [os.ErrDeadlineExceeded] when no client connects in time, and
// [ErrServerClosed] once the server is closed.
func (s *Server) AcceptTimeout(d time.Duration) (*Conn, error) {
	s.beginOp()
	defer s.endOp()
	return s.accept(d)
}

// Go runs script on a new goroutine with the next client connection that
// neither Accept nor an earlier Go script takes: scripts get connections in
// the order of their Go calls, which makes reconnect tests read in order:
//
//	s.Go(func(c *fakensqd.Conn) { c.Handshake(nil); c.Expect("PUB"); c.Reset() })
//	s.Go(func(c *fakensqd.Conn) { c.Handshake(nil); c.ServePublishes(1) })
//
// A failure inside script, including no client connecting within
// [DefaultAcceptTimeout], is reported with t.Error and ends the script; see
// the package documentation. [Server.Wait] waits for scripts to return; the
// test's cleanup reports a script that never got a connection, or is still
// blocked after its socket was closed.
func (s *Server) Go(script func(c *Conn)) {
	s.t.Helper()
	_, file, line, _ := runtime.Caller(1)
	sc := newScript(fmt.Sprintf("%s:%d", filepath.Base(file), line))
	s.mu.Lock()
	prev, turn := s.lastTurn, make(chan struct{})
	s.lastTurn = turn
	s.scripts = append(s.scripts, sc)
	s.mu.Unlock()
	go s.runScript(sc, prev, turn, script)
}

// Wait waits for every script started by [Server.Go] so far to return. It
// fails the test if one is still running after 10 s. Values a script stored
// before returning are visible to the caller after Wait.
func (s *Server) Wait() {
	s.t.Helper()
	s.mu.Lock()
	scripts := slices.Clone(s.scripts)
	s.mu.Unlock()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for _, sc := range scripts {
		select {
		case <-sc.done:
		case <-timer.C:
			s.fail(failFatal, fmt.Sprintf("fakensqd: Wait: the script started by Go at %s is still running after %v%s",
				sc.where, waitTimeout, s.blockedIn(sc)))
			return
		}
	}
}

// Close stops the server: it closes the listener and every connection, then
// waits for [Server.Go] scripts and for Conn calls in progress to return.
// Closing the sockets makes every blocked Conn call fail, which fails the
// test if a script was still waiting for a command. A script still blocked
// 5 s after the sockets are closed fails the test too. Close is idempotent;
// the cleanup registered by [New] calls it, so calling it is only needed to
// simulate nsqd going away in the middle of a test.
func (s *Server) Close() {
	s.t.Helper()
	s.closeOnce.Do(s.shutdown)
}

func (s *Server) shutdown() {
	s.t.Helper()
	s.mu.Lock()
	s.closed = true
	close(s.closedCh)
	conns := slices.Clone(s.conns)
	s.mu.Unlock()

	s.ln.Close()
	<-s.acceptDone
	for _, c := range conns {
		c.closeWith("the server was closed while the script was using it")
	}

	deadline := time.Now().Add(s.closeGrace)
	for {
		stuck, ops := s.pending()
		if len(stuck) == 0 && ops == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, sc := range stuck {
				s.report(fmt.Sprintf("fakensqd: the script started by Go at %s is still blocked %v after the server closed its sockets%s",
					sc.where, s.closeGrace, s.blockedIn(sc)))
			}
			if len(stuck) == 0 {
				s.report(fmt.Sprintf("fakensqd: %d Conn calls still blocked %v after the server closed its sockets", ops, s.closeGrace))
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// pending returns the scripts that have not returned, and the number of
// calls in progress.
func (s *Server) pending() (stuck []*script, ops int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sc := range s.scripts {
		select {
		case <-sc.done:
		default:
			stuck = append(stuck, sc)
		}
	}
	return stuck, s.inflight
}

// blockedIn describes where a script is blocked, for failure messages.
func (s *Server) blockedIn(sc *script) string {
	s.mu.Lock()
	c := sc.conn
	s.mu.Unlock()
	if c == nil {
		return " (waiting for a connection)"
	}
	if op := c.op.Load(); op != nil {
		return fmt.Sprintf(" (in conn #%d %s)", c.id, *op)
	}
	return fmt.Sprintf(" (conn #%d, not in a Conn call)", c.id)
}

func (s *Server) beginOp() {
	s.mu.Lock()
	s.inflight++
	s.mu.Unlock()
}

func (s *Server) endOp() {
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
}

func newScript(where string) *script {
	return &script{where: where, done: make(chan struct{})}
}

// runScript is the goroutine of a Go script: it waits for the previous
// script to get its connection (prev, nil for the first), takes the next
// one, lets the next script go (turn), and runs fn.
func (s *Server) runScript(sc *script, prev, turn chan struct{}, fn func(*Conn)) {
	defer close(sc.done)

	c := func() *Conn {
		defer close(turn) // also when the accept fails and Goexits
		if prev != nil {
			select {
			case <-prev:
			case <-s.closedCh:
			}
		}
		c, err := s.accept(DefaultAcceptTimeout)
		if err != nil {
			s.fail(failScript, fmt.Sprintf("fakensqd: the script started by Go at %s got no connection: %v", sc.where, err))
			return deadConn(s) // not reached: fail ends a script goroutine
		}
		return c
	}()
	c.mode = failScript
	s.mu.Lock()
	sc.conn = c
	s.mu.Unlock()
	fn(c)
}

// accept pops the next queued conn, waiting up to d.
func (s *Server) accept(d time.Duration) (*Conn, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			c := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return c, nil
		}
		if s.closed {
			s.mu.Unlock()
			return nil, fmt.Errorf("no client connected before the server was closed: %w", ErrServerClosed)
		}
		arrived := s.arrived
		s.mu.Unlock()
		select {
		case <-arrived:
		case <-s.closedCh:
		case <-timer.C:
			return nil, fmt.Errorf("no client connected within %v: %w", d, os.ErrDeadlineExceeded)
		}
	}
}

func (s *Server) acceptLoop() {
	defer close(s.acceptDone)
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if !closed {
				s.report("fakensqd: accept: " + err.Error())
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.nextID++
		c := newConn(s, s.nextID, nc)
		s.conns = append(s.conns, c)
		s.queue = append(s.queue, c)
		close(s.arrived)
		s.arrived = make(chan struct{})
		s.mu.Unlock()
	}
}

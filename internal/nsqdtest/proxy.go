package nsqdtest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy for injecting connection failures between a client
// and nsqd. Create one with NewProxy.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // accept loop and one per connection pair
	once   sync.Once

	mu     sync.Mutex
	pairs  map[*proxyPair]struct{}
	conns  int
	closed bool
}

// proxyPair is an accepted client connection and its upstream connection.
type proxyPair struct {
	client   net.Conn
	upstream net.Conn // guarded by Proxy.mu; nil while dialing
	cut      bool     // guarded by Proxy.mu
}

// NewProxy starts a proxy listening on 127.0.0.1:0 that forwards every
// accepted connection to target (host:port). Half-closes are propagated.
// The proxy is closed on t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("nsqdtest: NewProxy: %v", err)
	}
	p := &Proxy{
		target: target,
		ln:     ln,
		pairs:  make(map[*proxyPair]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the host:port clients should connect to.
func (p *Proxy) Addr() string {
	return p.ln.Addr().String()
}

// Conns returns the number of client connections accepted so far.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

// Cut abruptly closes every current connection on both sides (with
// SO_LINGER 0, so the peers get a TCP reset and their reads and writes fail
// mid-stream), and returns how many it closed that were not cut before. The proxy keeps accepting
// new connections.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for pair := range p.pairs {
		if !pair.cut {
			n++
		}
		pair.cut = true
		abort(pair.client)
		if pair.upstream != nil {
			abort(pair.upstream)
		}
	}
	return n
}

// Close stops accepting connections, cuts the current ones and waits for
// all of the proxy's goroutines to exit. It is called on t.Cleanup and is
// safe to call more than once.
func (p *Proxy) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.ln.Close()
		p.Cut()
		p.wg.Wait()
	})
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		pair := &proxyPair{client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			abort(c)
			continue
		}
		p.conns++
		p.pairs[pair] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pair)
	}
}

func (p *Proxy) serve(pair *proxyPair) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.pairs, pair)
		p.mu.Unlock()
	}()

	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		abort(pair.client)
		return
	}
	p.mu.Lock()
	if pair.cut {
		p.mu.Unlock()
		abort(up)
		return
	}
	pair.upstream = up
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(up, pair.client) }()
	go func() { defer wg.Done(); pipe(pair.client, up) }()
	wg.Wait()
	pair.client.Close()
	up.Close()
}

// pipe copies src to dst. On EOF it half-closes dst; on any error it
// closes both connections so the opposite direction stops too.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
	src.Close()
}

// abort closes c with SO_LINGER 0, so the peer receives a reset.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

package nsq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// lookupdMissedPolls is how many answers of nsqlookupd in a row must lack
// a node before the pool removes it: one missed answer (a node
// re-registering, a lookupd restarting) is not enough.
const lookupdMissedPolls = 2

// poolLookupd is the pool's nsqlookupd polling. Fields are guarded by
// ProducerPool.mu unless noted.
type poolLookupd struct {
	addrs        []string // nsqlookupd HTTP endpoints (http://host:port/nodes)
	started      bool
	firstPending bool          // the first poll has not finished: publishes wait for it
	cancel       func()        // ends the poll loop
	done         chan struct{} // closed when the poll loop has exited
	pollNow      chan struct{} // capacity 1: poll at once (a lookupd was added)
}

// ConnectToNSQLookupd adds an nsqlookupd HTTP address ("host:port" or an
// http(s) URL) to poll for nodes. The pool asks every nsqlookupd for GET
// /nodes at once and then every Config.LookupdPollInterval (plus up to
// Config.LookupdPollJitter of it, at random), and publishes to every nsqd
// listed, keyed by broadcast_address:tcp_port. A node missing from two
// answers in a row is drained and removed (nodes given to NewProducerPool
// are never removed; when no node is left, or none that is not down,
// publishes waiting for one fail with ErrNeverSent); while no nsqlookupd answers, the pool keeps its
// nodes; a node takes no publish of a topic it has tombstoned while a node
// that has not is up (publishes wait for that node's room rather than
// overflow to it). The nsqlookupd are asked independently: one that does not
// answer (until Config.LookupdPollTimeout) delays neither the others'
// answers nor the next polls of the others. Until the first poll has
// finished, publishes wait for it, for at most Config.DialTimeout plus
// Config.MaxReconnectBackoff (the bound of a publish when every node is
// down); with no node known by then they fail with ErrNeverSent. An address
// already added is ignored. When the pool stops, the polling stops and its
// connections to nsqlookupd are closed.
func (p *ProducerPool) ConnectToNSQLookupd(addr string) error {
	endpoint, err := lookupdEndpoint(addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return ErrStopped
	}
	l := &p.lookupd
	for _, a := range l.addrs {
		if a == endpoint {
			return nil
		}
	}
	l.addrs = append(l.addrs, endpoint)
	if l.started {
		select {
		case l.pollNow <- struct{}{}:
		default:
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.started, l.firstPending = true, true
	l.cancel, l.done, l.pollNow = cancel, make(chan struct{}), make(chan struct{}, 1)
	go p.pollLookupd(ctx)
	return nil
}

// ConnectToNSQLookupds adds each of addrs, as ConnectToNSQLookupd does.
func (p *ProducerPool) ConnectToNSQLookupds(addrs []string) error {
	for _, a := range addrs {
		if err := p.ConnectToNSQLookupd(a); err != nil {
			return err
		}
	}
	return nil
}

// lookupdEndpoint turns an nsqlookupd address into its /nodes URL.
func lookupdEndpoint(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("nsq: invalid nsqlookupd address %q: want host:port or http://host:port", addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/nodes"
	u.RawQuery = ""
	return u.String(), nil
}

// stop ends the poll loop and waits for it. mu must not be held.
func (l *poolLookupd) stop() {
	if l.cancel == nil {
		return
	}
	l.cancel()
	<-l.done
}

// pollLookupd is the poll loop. Every interval (with jitter) a round
// starts: every nsqlookupd without a query in flight is asked at once, so
// one that does not answer delays nobody else's nodes. A round ends when
// every query in flight has answered, or when the next round is due (a
// query still in flight then counts as no answer, and its answer, when it
// comes, counts in the round it comes in).
func (p *ProducerPool) pollLookupd(ctx context.Context) {
	defer close(p.lookupd.done)
	// The pool's own copy of the default transport: its keep-alive
	// connections to nsqlookupd are closed when the loop exits, so that no
	// goroutine of theirs outlives Stop. (A program that replaced
	// http.DefaultTransport with a wrapper gets its wrapper, whose idle
	// connections are closed, if it can, as the loop exits.)
	transport := http.DefaultTransport
	if t, ok := transport.(*http.Transport); ok {
		transport = t.Clone()
	}
	client := &http.Client{Timeout: p.config.LookupdPollTimeout, Transport: transport}
	defer client.CloseIdleConnections()
	// As go-nsq's Consumer does: auth_secret as a bearer token, unless
	// skip_lookupd_authorization is false.
	bearer := ""
	if p.config.AuthSecret != "" && p.config.LookupdAuthorization {
		bearer = "Bearer " + p.config.AuthSecret
	}
	answers := make(chan lookupdAnswer)
	inflight := map[string]bool{}
	defer func() {
		// ctx is done: the queries in flight end at once.
		for len(inflight) > 0 {
			delete(inflight, (<-answers).addr)
		}
	}()
	ask := func() {
		p.mu.Lock()
		addrs := append([]string(nil), p.lookupd.addrs...)
		p.mu.Unlock()
		for _, a := range addrs {
			if inflight[a] {
				continue
			}
			inflight[a] = true
			go func() {
				nodes, err := queryLookupd(ctx, client, a, bearer)
				answers <- lookupdAnswer{a, nodes, err}
			}()
		}
	}
	// Publishes wait for the first round only as long as they would wait
	// for a node that is down: an nsqlookupd that accepts the connection
	// and does not answer must not hold them for lookupd_poll_timeout.
	first := time.NewTimer(p.config.DialTimeout + p.config.MaxReconnectBackoff)
	defer first.Stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var r lookupdRound
	open := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			if open {
				p.endRound(&r, false)
			}
			r, open = lookupdRound{found: map[string]map[string]bool{}}, true
			ask()
			wait := p.config.LookupdPollInterval
			if j := p.config.LookupdPollJitter; j > 0 {
				wait += time.Duration(rand.Float64() * j * float64(wait))
			}
			timer.Reset(wait)
		case <-p.lookupd.pollNow:
			if !open {
				r, open = lookupdRound{found: map[string]map[string]bool{}}, true
			}
			ask()
		case a := <-answers:
			delete(inflight, a.addr)
			if !open {
				// Only a query of a round that ended: counted in the next.
				r, open = lookupdRound{found: map[string]map[string]bool{}}, true
			}
			p.addAnswer(ctx, &r, a)
			if len(inflight) == 0 {
				p.endRound(&r, true)
				open = false
			}
		case <-first.C:
			p.firstPollLate()
		}
	}
}

// lookupdAnswer is one nsqlookupd's answer to GET /nodes.
type lookupdAnswer struct {
	addr  string
	nodes []lookupdNode
	err   error
}

// lookupdRound gathers the answers of one round of polls.
type lookupdRound struct {
	found    map[string]map[string]bool // node -> its tombstoned topics
	answered int
}

// lookupdNode is one nsqd in an nsqlookupd answer.
type lookupdNode struct {
	BroadcastAddress string   `json:"broadcast_address"`
	TCPPort          int      `json:"tcp_port"`
	Topics           []string `json:"topics"`
	Tombstones       []bool   `json:"tombstones"`
}

// lookupdNodes is GET /nodes's answer: v1.x's bare object, or the
// {"status_code", "status_txt", "data"} envelope of earlier versions.
type lookupdNodes struct {
	Producers []lookupdNode `json:"producers"`
	Data      *struct {
		Producers []lookupdNode `json:"producers"`
	} `json:"data"`
}

// addAnswer adds one answer to the round. The nodes it lists that the pool
// lacks join at once, without waiting for the other answers; which nodes
// are gone is decided when the round ends.
func (p *ProducerPool) addAnswer(ctx context.Context, r *lookupdRound, a lookupdAnswer) {
	if a.err != nil {
		if ctx.Err() == nil {
			p.log(LogLevelWarning, "nsqlookupd %s: %v (keeping the last list)", a.addr, a.err)
		}
		return
	}
	r.answered++
	var listed []string
	for _, n := range a.nodes {
		if n.BroadcastAddress == "" || n.TCPPort <= 0 {
			continue
		}
		addr := net.JoinHostPort(n.BroadcastAddress, strconv.Itoa(n.TCPPort))
		listed = append(listed, addr)
		if r.found[addr] == nil {
			r.found[addr] = map[string]bool{}
		}
		for i, topic := range n.Topics {
			if i < len(n.Tombstones) && n.Tombstones[i] {
				r.found[addr][topic] = true
			}
		}
	}
	p.mu.Lock()
	if !p.stopped {
		for _, addr := range listed {
			if n := p.byAddr[addr]; n == nil || n.state == nodeRemoved {
				n = p.addNodeLocked(addr, false)
				n.tombstoned = r.found[addr]
			}
		}
		p.dispatchLocked(nil)
	}
	p.mu.Unlock()
}

// endRound updates the pool from a round's answers: when at least one
// nsqlookupd answered, every node listed is kept (with the topics it
// tombstoned), and one missing from lookupdMissedPolls rounds in a row is
// drained and removed. The end of the first round that had an answer, or
// in which every nsqlookupd failed (complete: none is still being asked),
// lets the publishes waiting for it go.
func (p *ProducerPool) endRound(r *lookupdRound, complete bool) {
	p.mu.Lock()
	var out []*poolTx
	if r.answered > 0 && !p.stopped {
		for addr, tomb := range r.found {
			n := p.addNodeLocked(addr, false)
			n.missed, n.tombstoned = 0, tomb
		}
		for _, n := range append([]*poolNode(nil), p.nodes...) {
			if _, ok := r.found[n.addr]; ok || n.static || n.state == nodeRemoved {
				continue
			}
			if n.missed++; n.missed >= lookupdMissedPolls {
				p.log(LogLevelInfo, "nsqd %s is no longer listed by nsqlookupd: removing it", n.addr)
				n.removeLocked(p)
			}
		}
		// What waited for a node that left fails now when no node can
		// take it (no node that is down would try again).
		if !p.anyNodeLocked() {
			p.lastErr = errNoNodes
		}
		out = p.failIfHopelessLocked()
	}
	if p.lookupd.firstPending && (r.answered > 0 || complete) {
		p.lookupd.firstPending = false
		if !p.anyNodeLocked() {
			p.lastErr = errNoNodes
		}
		out = append(out, p.failIfHopelessLocked()...)
	}
	p.dispatchLocked(nil)
	p.mu.Unlock()
	p.deliver(out)
}

// firstPollLate lets the publishes waiting for the first round go: to the
// nodes the pool has, or, with none up, failed as when every node is down.
func (p *ProducerPool) firstPollLate() {
	p.mu.Lock()
	var out []*poolTx
	if p.lookupd.firstPending && !p.stopped {
		p.lookupd.firstPending = false
		p.log(LogLevelWarning, "nsqlookupd has not answered within %s: publishing to the nodes known", p.config.DialTimeout+p.config.MaxReconnectBackoff)
		if p.lastErr == nil {
			p.lastErr = neverSentf(errLookupdLate)
		}
		out = p.failIfHopelessLocked()
		p.dispatchLocked(nil)
	}
	p.mu.Unlock()
	p.deliver(out)
}

// errLookupdLate is why publishes fail when the pool has no node up and
// nsqlookupd has not answered its first poll in time.
var errLookupdLate = errors.New("nsq: no nsqlookupd answered the ProducerPool's first poll in time (dial_timeout + max_reconnect_backoff)")

// queryLookupd does one GET /nodes, with an Authorization header when
// bearer is set.
func queryLookupd(ctx context.Context, client *http.Client, endpoint, bearer string) ([]lookupdNode, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	if bearer != "" {
		req.Header.Set("Authorization", bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			return nil, fmt.Errorf("%s: %s", resp.Status, e.Message)
		}
		return nil, errors.New(resp.Status)
	}
	var ans lookupdNodes
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("decoding /nodes: %w", err)
	}
	if ans.Data != nil {
		return ans.Data.Producers, nil
	}
	return ans.Producers, nil
}

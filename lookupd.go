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
// are never removed); while no nsqlookupd answers, the pool keeps its
// nodes; a node is avoided for a topic it has tombstoned while another node
// can take it. Until the first poll has finished, publishes wait for it. An
// address already added is ignored.
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

// pollLookupd is the poll loop: at once, then every interval with jitter.
func (p *ProducerPool) pollLookupd(ctx context.Context) {
	defer close(p.lookupd.done)
	client := &http.Client{Timeout: p.config.LookupdPollTimeout}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.lookupd.pollNow:
		}
		p.pollOnce(ctx, client)
		wait := p.config.LookupdPollInterval
		if j := p.config.LookupdPollJitter; j > 0 {
			wait += time.Duration(rand.Float64() * j * float64(wait))
		}
		timer.Reset(wait)
	}
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

// pollOnce asks every nsqlookupd for its nodes and updates the pool.
func (p *ProducerPool) pollOnce(ctx context.Context, client *http.Client) {
	p.mu.Lock()
	addrs := append([]string(nil), p.lookupd.addrs...)
	p.mu.Unlock()
	found := map[string]map[string]bool{} // node -> tombstoned topics
	answered := 0
	for _, a := range addrs {
		nodes, err := queryLookupd(ctx, client, a)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log(LogLevelWarning, "nsqlookupd %s: %v (keeping the last list)", a, err)
			continue
		}
		answered++
		for _, n := range nodes {
			if n.BroadcastAddress == "" || n.TCPPort <= 0 {
				continue
			}
			addr := net.JoinHostPort(n.BroadcastAddress, strconv.Itoa(n.TCPPort))
			if found[addr] == nil {
				found[addr] = map[string]bool{}
			}
			for i, topic := range n.Topics {
				if i < len(n.Tombstones) && n.Tombstones[i] {
					found[addr][topic] = true
				}
			}
		}
	}
	p.mu.Lock()
	var out []*poolTx
	if answered > 0 && !p.stopped {
		for addr, tomb := range found {
			n := p.addNodeLocked(addr, false)
			n.missed, n.tombstoned = 0, tomb
		}
		for _, n := range append([]*poolNode(nil), p.nodes...) {
			if _, ok := found[n.addr]; ok || n.static || n.state == nodeRemoved {
				continue
			}
			if n.missed++; n.missed >= lookupdMissedPolls {
				p.log(LogLevelInfo, "nsqd %s is no longer listed by nsqlookupd: removing it", n.addr)
				n.removeLocked(p)
			}
		}
	}
	if p.lookupd.firstPending {
		p.lookupd.firstPending = false
		if len(p.nodes) == 0 {
			p.lastErr = errNoNodes
		}
		out = p.failIfHopelessLocked()
	}
	p.dispatchLocked(nil)
	p.mu.Unlock()
	p.deliver(out)
}

// queryLookupd does one GET /nodes.
func queryLookupd(ctx context.Context, client *http.Client, endpoint string) ([]lookupdNode, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
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

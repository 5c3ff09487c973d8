package nsqdtest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// lookupdNodes returns the tcp ports /nodes lists.
func lookupdNodes(t *testing.T, l *Lookupd) []int {
	t.Helper()
	resp, err := http.Get("http://" + l.HTTPAddr() + "/nodes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var nodes struct {
		Producers []struct {
			BroadcastAddress string `json:"broadcast_address"`
			TCPPort          int    `json:"tcp_port"`
		} `json:"producers"`
	}
	if err := json.Unmarshal(body, &nodes); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	var ports []int
	for _, p := range nodes.Producers {
		if p.BroadcastAddress != "127.0.0.1" {
			t.Errorf("broadcast_address %q, want 127.0.0.1", p.BroadcastAddress)
		}
		ports = append(ports, p.TCPPort)
	}
	return ports
}

// TestLookupdRegistersNsqd: an nsqd started with --lookupd-tcp-address is
// listed by /nodes under 127.0.0.1 and its TCP port, and leaves the list
// when it is killed.
func TestLookupdRegistersNsqd(t *testing.T) {
	l := StartLookupd(t)
	n := Start(t, "--lookupd-tcp-address="+l.TCPAddr(), "--broadcast-address=127.0.0.1")
	_, port, _ := splitHostPort(n.TCPAddr())
	waitNodes := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ports := lookupdNodes(t, l)
			if len(ports) == want && (want == 0 || ports[0] == port) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/nodes lists %v, want %d node(s) (port %d)", ports, want, port)
			}
			time.Sleep(20 * time.Millisecond) // nsqlookupd offers nothing to wait on
		}
	}
	waitNodes(1)
	n.Kill()
	waitNodes(0)
}

// TestPauseResume: a paused nsqd answers nothing until resumed, and a
// paused nsqd is still stopped by Stop.
func TestPauseResume(t *testing.T) {
	n := Start(t)
	client := &http.Client{Timeout: 300 * time.Millisecond}
	ping := func() error {
		resp, err := client.Get("http://" + n.HTTPAddr() + "/ping")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	if err := n.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err == nil {
		t.Fatal("a paused nsqd answered /ping")
	}
	if err := n.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err != nil {
		t.Fatalf("resumed nsqd: %v", err)
	}
	if err := n.Pause(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n.Stop()
	if !exited(n) {
		t.Fatal("Stop returned with nsqd running")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Stop of a paused nsqd took %s: it waited for the SIGKILL fallback", d)
	}
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port := 0
	for _, c := range p {
		port = port*10 + int(c-'0')
	}
	return host, port, nil
}

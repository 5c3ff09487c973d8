package nsqdtest

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// Lookupd is a running (or stopped) nsqlookupd process started by
// StartLookupd.
type Lookupd struct {
	n *Nsqd
}

// StartLookupd runs nsqlookupd (see LookupdBinary) with
//
//	--tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0
//	--broadcast-address=127.0.0.1 --log-level=info
//
// followed by args (which may replace these), waits for its TCP and HTTP
// listeners like Start, and stops it on t.Cleanup. An nsqd registers with
// it when started with "--lookupd-tcp-address="+l.TCPAddr(); give that nsqd
// "--broadcast-address=127.0.0.1" too, or it is listed under the host name.
func StartLookupd(t testing.TB, args ...string) *Lookupd {
	t.Helper()
	bin, err := LookupdBinary()
	if err != nil {
		t.Fatal(err)
	}
	n := &Nsqd{
		t:        t,
		bin:      bin,
		lookupd:  true,
		tcpAddr:  "127.0.0.1:0",
		httpAddr: "127.0.0.1:0",
	}
	haveLogLevel, haveBroadcast := false, false
	for i := 0; i < len(args); i++ {
		name, value, inline := splitFlag(args[i])
		takesValue := name == "tcp-address" || name == "http-address" || name == "log-level" ||
			name == "broadcast-address" || name == "inactive-producer-timeout" || name == "tombstone-lifetime"
		if takesValue && !inline && i+1 < len(args) {
			i++
			value = args[i]
		}
		switch name {
		case "tcp-address":
			n.tcpAddr = value
			continue
		case "http-address":
			n.httpAddr = value
			continue
		case "log-level":
			haveLogLevel = true
		case "broadcast-address":
			haveBroadcast = true
		}
		if takesValue {
			n.args = append(n.args, "--"+name+"="+value)
		} else {
			n.args = append(n.args, args[i])
		}
	}
	var defaults []string
	if !haveLogLevel {
		defaults = append(defaults, "--log-level=info")
	}
	if !haveBroadcast {
		defaults = append(defaults, "--broadcast-address=127.0.0.1")
	}
	n.args = append(defaults, n.args...)
	t.Cleanup(n.cleanup)
	if err := n.run(1); err != nil {
		n.fatal(err)
	}
	return &Lookupd{n: n}
}

// TCPAddr returns the host:port nsqd registers at (--lookupd-tcp-address).
func (l *Lookupd) TCPAddr() string { return l.n.TCPAddr() }

// HTTPAddr returns the host:port of nsqlookupd's HTTP API (GET /nodes).
func (l *Lookupd) HTTPAddr() string { return l.n.HTTPAddr() }

// Stop stops nsqlookupd with SIGTERM (SIGKILL after 5 seconds).
func (l *Lookupd) Stop() { l.n.Stop() }

// Kill stops nsqlookupd with SIGKILL.
func (l *Lookupd) Kill() { l.n.Kill() }

// Restart starts a stopped nsqlookupd again on the same addresses (see
// Nsqd.Restart); registered nsqd reconnect to it on their own.
func (l *Lookupd) Restart() {
	l.n.t.Helper()
	l.n.Restart()
}

// Log returns what nsqlookupd has written so far.
func (l *Lookupd) Log() string { return l.n.Log() }

// LaunchLookupd is StartLookupd for code that has no testing.TB, such as
// Example functions (see Launch): it returns an error instead of failing a
// test, and the caller must call Close.
func LaunchLookupd(args ...string) (*Lookupd, error) {
	return launch(StartLookupd, args)
}

// Close stops nsqlookupd (see Nsqd.Close).
func (l *Lookupd) Close() { l.n.Close() }

// CreateTopic creates topic on nsqd (POST /topic/create), which also loads
// what its disk queue holds. After a SIGKILL nsqd may restart without a
// topic it had created moments before (its metadata file was not yet
// renamed into place), though the topic's messages are on disk: create the
// topic before asking Stats about it.
func (n *Nsqd) CreateTopic(topic string) error {
	resp, err := http.Post("http://"+n.HTTPAddr()+"/topic/create?topic="+url.QueryEscape(topic), "", nil)
	if err != nil {
		return fmt.Errorf("nsqdtest: creating topic %s: %w", topic, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("nsqdtest: creating topic %s: %s: %s", topic, resp.Status, body)
	}
	return nil
}

// CreateChannel creates topic (CreateTopic), then channel on it (POST
// /channel/create). nsqd writes both to its metadata file, so after
// Restart they exist from the start: nsqd v1.3.0 scans a channel's
// deferred and in-flight messages (every 100ms) only once its list of
// channels includes it, and it makes that list at start and then only
// every 5 s.
func (n *Nsqd) CreateChannel(topic, channel string) error {
	if err := n.CreateTopic(topic); err != nil {
		return err
	}
	u := "http://" + n.HTTPAddr() + "/channel/create?topic=" + url.QueryEscape(topic) + "&channel=" + url.QueryEscape(channel)
	resp, err := http.Post(u, "", nil)
	if err != nil {
		return fmt.Errorf("nsqdtest: creating channel %s on %s: %w", channel, topic, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("nsqdtest: creating channel %s on %s: %s: %s", channel, topic, resp.Status, body)
	}
	return nil
}

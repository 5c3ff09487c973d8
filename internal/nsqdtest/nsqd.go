package nsqdtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds how long Start and Restart wait for nsqd to
	// report its listeners.
	readyTimeout = 20 * time.Second
	// stopTimeout bounds how long a graceful stop may take before nsqd is
	// killed.
	stopTimeout = 5 * time.Second
	// logTailLines is how many log lines are printed when a test fails.
	logTailLines = 100
	// restartAttempts is how many times Restart tries to bind the previous
	// addresses when they are briefly unavailable.
	restartAttempts = 5
	// settleTime is the minimum time between readiness and a graceful
	// Stop. nsqd v1.3.0 (via go-svc) installs its SIGTERM handler only
	// after it has started its listeners and logged them, so a SIGTERM
	// sent right after the "listening" lines can kill it with the default
	// signal action, skipping the graceful shutdown (and the flush of
	// in-memory messages to disk). Nothing observable from outside marks
	// the moment the handler is installed, so Stop waits out this window.
	settleTime = 100 * time.Millisecond
)

// Log line markers printed by nsqd (internal/protocol/tcp_server.go and
// internal/http_api/http_server.go), e.g.
//
//	[nsqd] 2024/01/02 15:04:05.000000 INFO: TCP: listening on 127.0.0.1:41234
const (
	tcpMarker   = "TCP: listening on "
	httpMarker  = "HTTP: listening on "
	httpsMarker = "HTTPS: listening on "
)

// Nsqd is a running (or stopped) nsqd process started by Start.
//
// Its methods may be called from any goroutine, except Restart, which calls
// t.Fatal and so must be called from the test goroutine.
type Nsqd struct {
	t         testing.TB
	bin       string
	lookupd   bool     // the process is nsqlookupd (no HTTPS listener, no data path)
	args      []string // user arguments, without the address flags
	wantHTTPS bool     // TLS is configured, so an HTTPS listener is expected

	mu         sync.Mutex
	log        []string
	tcpAddr    string
	httpAddr   string
	httpsAddr  string
	proc       *process
	logPrinted bool
}

// process is one run of the nsqd binary.
type process struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited
	waitErr error         // result of cmd.Wait, valid once done is closed
	logDone chan struct{} // closed once the output pipe reached EOF
	ready   chan struct{} // closed once all expected listeners are logged
	readyAt time.Time     // when ready was observed; guarded by Nsqd.mu

	// Guarded by Nsqd.mu.
	tcp, http, https string
	readyClosed      bool
	addrInUse        bool
}

// Start runs nsqd (see Binary) with
//
//	--tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0
//	--https-address=127.0.0.1:0 --data-path=<t.TempDir()> --log-level=info
//
// followed by args. Other nsqd flags (--lookupd-tcp-address,
// --broadcast-address, --mem-queue-size, --sync-every, ...) pass through as
// given. If args set any of these flags, their values replace the
// defaults (--log-level must stay info or debug: readiness is detected from
// info log lines, and the HTTP listener must stay enabled).
//
// Start reads nsqd's output line by line and returns once nsqd has logged
// "TCP: listening on ..." and "HTTP: listening on ..." (and "HTTPS:
// listening on ..." when --tls-cert and --tls-key are given). It calls
// t.Fatal with the captured log if nsqd exits first or is not ready within
// 20 seconds. The process is stopped on t.Cleanup (SIGTERM, then SIGKILL
// after 5 seconds), and the last 100 log lines are printed if the test
// failed.
func Start(t testing.TB, args ...string) *Nsqd {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}

	n := &Nsqd{
		t:         t,
		bin:       bin,
		tcpAddr:   "127.0.0.1:0",
		httpAddr:  "127.0.0.1:0",
		httpsAddr: "127.0.0.1:0",
	}
	var (
		haveDataPath, haveLogLevel bool
		tlsCert, tlsKey            string
	)
	for i := 0; i < len(args); i++ {
		name, value, inline := splitFlag(args[i])
		takesValue := false
		switch name {
		case "tcp-address", "http-address", "https-address", "data-path", "log-level", "tls-cert", "tls-key":
			takesValue = true
		}
		if takesValue && !inline && i+1 < len(args) {
			i++
			value = args[i]
			inline = true
		}
		switch name {
		case "tcp-address":
			n.tcpAddr = value
			continue // re-added below, possibly resolved on Restart
		case "http-address":
			n.httpAddr = value
			continue
		case "https-address":
			n.httpsAddr = value
			continue
		case "data-path":
			haveDataPath = true
		case "log-level":
			haveLogLevel = true
			if l := strings.ToLower(value); l != "debug" && l != "info" {
				t.Fatalf("nsqdtest: --log-level=%s hides the readiness log lines; use info or debug", value)
			}
		case "tls-cert":
			tlsCert = value
		case "tls-key":
			tlsKey = value
		}
		if takesValue {
			n.args = append(n.args, "--"+name+"="+value)
		} else {
			n.args = append(n.args, args[i])
		}
	}
	if n.httpAddr == "" {
		t.Fatal("nsqdtest: an empty --http-address is not supported")
	}
	n.wantHTTPS = tlsCert != "" && tlsKey != "" && n.httpsAddr != ""

	var defaults []string
	if !haveDataPath {
		// Registered before our Cleanup, so removed after nsqd is stopped.
		defaults = append(defaults, "--data-path="+t.TempDir())
	}
	if !haveLogLevel {
		defaults = append(defaults, "--log-level=info")
	}
	n.args = append(defaults, n.args...)

	t.Cleanup(n.cleanup)
	if err := n.run(1); err != nil {
		n.fatal(err)
	}
	return n
}

// splitFlag splits a command line argument "-name=value" or "--name=value"
// into its parts. inline reports whether the value was part of arg. name is
// empty if arg is not a flag.
func splitFlag(arg string) (name, value string, inline bool) {
	if len(arg) < 2 || arg[0] != '-' || arg == "--" {
		return "", "", false
	}
	name = strings.TrimPrefix(arg[1:], "-")
	if i := strings.IndexByte(name, '='); i >= 0 {
		return name[:i], name[i+1:], true
	}
	return name, "", false
}

// TCPAddr returns the host:port of nsqd's TCP listener.
func (n *Nsqd) TCPAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tcpAddr
}

// HTTPAddr returns the host:port of nsqd's HTTP listener.
func (n *Nsqd) HTTPAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.httpAddr
}

// HTTPSAddr returns the host:port of nsqd's HTTPS listener, or "" if nsqd
// was started without --tls-cert and --tls-key.
func (n *Nsqd) HTTPSAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.wantHTTPS {
		return ""
	}
	return n.httpsAddr
}

// Log returns everything nsqd has written to stdout and stderr so far,
// across restarts, interleaved with a few "nsqdtest:" lines marking process
// starts and exits.
func (n *Nsqd) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.log, "\n")
}

// Stop sends SIGTERM to nsqd and waits for it to exit (nsqd then flushes
// in-memory messages to its data path). If it has not exited after 5
// seconds it is killed. Stop does nothing if nsqd is not running.
//
// If nsqd became ready less than 100ms ago, Stop first waits for the rest
// of that time: nsqd v1.3.0 installs its SIGTERM handler only after logging
// its listeners, and an earlier SIGTERM would kill it without a graceful
// shutdown.
func (n *Nsqd) Stop() {
	n.mu.Lock()
	p := n.proc
	var wait time.Duration
	if p != nil && !p.readyAt.IsZero() {
		wait = settleTime - time.Since(p.readyAt)
	}
	n.mu.Unlock()
	if wait > 0 {
		select {
		case <-p.done:
		case <-time.After(wait):
		}
	}
	n.stop(false)
}

// Kill sends SIGKILL to nsqd and waits for it to exit. Messages held in
// memory are lost. Kill does nothing if nsqd is not running.
func (n *Nsqd) Kill() {
	n.stop(true)
}

// Restart stops nsqd gracefully if it is running, then starts it again with
// the same TCP, HTTP and HTTPS addresses (the ports picked by the first
// start), the same data path and the same arguments, and waits for it to be
// ready. If nsqd fails to bind because an address is still in use, it is
// retried a few times. Restart calls t.Fatal on failure, so it must be
// called from the test goroutine.
func (n *Nsqd) Restart() {
	n.t.Helper()
	n.Stop()
	if err := n.run(restartAttempts); err != nil {
		n.fatal(err)
	}
}

func (n *Nsqd) fatal(err error) {
	n.t.Helper()
	log := n.Log()
	n.mu.Lock()
	n.logPrinted = true
	n.mu.Unlock()
	n.t.Fatalf("nsqdtest: %v\nnsqd log:\n%s", err, log)
}

// run starts nsqd and waits for it to be ready, trying up to attempts times
// while it fails with "address already in use".
func (n *Nsqd) run(attempts int) error {
	backoff := 50 * time.Millisecond
	for i := 1; ; i++ {
		n.mu.Lock()
		args := []string{
			"--tcp-address=" + n.tcpAddr,
			"--http-address=" + n.httpAddr,
		}
		if !n.lookupd {
			args = append(args, "--https-address="+n.httpsAddr)
		}
		args = append(args, n.args...)
		n.mu.Unlock()

		p, err := n.launch(args)
		if err != nil {
			return err
		}
		err = n.waitReady(p)
		if err == nil {
			return nil
		}
		n.mu.Lock()
		inUse := p.addrInUse
		n.mu.Unlock()
		if !inUse || i >= attempts {
			return err
		}
		// The exit was caused by a bind failure: give the kernel a moment
		// to release the port and try again.
		n.appendLog(fmt.Sprintf("nsqdtest: address in use, retrying in %v (attempt %d/%d)", backoff, i+1, attempts))
		time.Sleep(backoff)
		backoff *= 2
	}
}

func (n *Nsqd) appendLog(line string) {
	n.mu.Lock()
	n.log = append(n.log, line)
	n.mu.Unlock()
}

// launch starts the nsqd binary with args and the goroutines that collect
// its output and exit status.
func (n *Nsqd) launch(args []string) (*process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(n.bin, args...)
	cmd.Stdout = w
	cmd.Stderr = w
	setSysProcAttr(cmd)
	n.appendLog("nsqdtest: starting " + n.bin + " " + strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("starting nsqd: %w", err)
	}
	w.Close()

	p := &process{
		cmd:     cmd,
		done:    make(chan struct{}),
		logDone: make(chan struct{}),
		ready:   make(chan struct{}),
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()

	go n.readLog(p, r)
	go func() {
		p.waitErr = cmd.Wait()
		msg := fmt.Sprintf("nsqdtest: nsqd (pid %d) exited: %v", cmd.Process.Pid, exitStatus(p.waitErr))
		if strings.Contains(msg, "signal: terminated") {
			msg += " (killed by SIGTERM before nsqd installed its signal handler: no graceful shutdown)"
		}
		n.appendLog(msg)
		close(p.done)
	}()
	return p, nil
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// readLog copies nsqd's output into the log line by line and watches for
// the listener lines.
func (n *Nsqd) readLog(p *process, r *os.File) {
	defer close(p.logDone)
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			n.handleLine(p, strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

func (n *Nsqd) handleLine(p *process, line string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.log = append(n.log, line)
	switch {
	case strings.Contains(line, httpsMarker):
		p.https = afterMarker(line, httpsMarker)
	case strings.Contains(line, httpMarker):
		p.http = afterMarker(line, httpMarker)
	case strings.Contains(line, tcpMarker):
		p.tcp = afterMarker(line, tcpMarker)
	case strings.Contains(line, "address already in use"),
		strings.Contains(line, "Only one usage of each socket address"):
		p.addrInUse = true
	}
	if !p.readyClosed && p.tcp != "" && p.http != "" && (!n.wantHTTPS || p.https != "") {
		p.readyClosed = true
		close(p.ready)
	}
}

func afterMarker(line, marker string) string {
	return strings.TrimSpace(line[strings.Index(line, marker)+len(marker):])
}

// waitReady waits until p is ready, has exited, or readyTimeout passed.
func (n *Nsqd) waitReady(p *process) error {
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-p.ready:
		n.mu.Lock()
		p.readyAt = time.Now()
		n.tcpAddr, n.httpAddr = p.tcp, p.http
		if n.wantHTTPS {
			n.httpsAddr = p.https
		}
		n.mu.Unlock()
		return nil
	case <-p.done:
		waitLog(p)
		return fmt.Errorf("nsqd exited before it was ready: %v", exitStatus(p.waitErr))
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		waitLog(p)
		return fmt.Errorf("nsqd was not ready after %v", readyTimeout)
	}
}

// waitLog waits (briefly) for the output of an exited process to be fully
// read. It could only take longer if nsqd had passed its output pipe on to
// a child process.
func waitLog(p *process) {
	select {
	case <-p.logDone:
	case <-time.After(2 * time.Second):
	}
}

// stop signals the current process and waits for it to exit.
func (n *Nsqd) stop(kill bool) {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return
	}
	select {
	case <-p.done:
		waitLog(p)
		return
	default:
	}
	if kill {
		_ = p.cmd.Process.Kill()
	} else if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		_ = p.cmd.Process.Kill() // e.g. on Windows
	} else {
		resume(p.cmd.Process) // a paused process handles SIGTERM once continued
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		n.appendLog(fmt.Sprintf("nsqdtest: nsqd did not exit within %v of SIGTERM; killing it", stopTimeout))
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	waitLog(p)
}

func (n *Nsqd) cleanup() {
	// No settle time here: whether nsqd exits gracefully or not does not
	// matter once the test is over.
	n.stop(false)
	n.mu.Lock()
	printed := n.logPrinted
	lines := n.log
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	tail := strings.Join(lines, "\n")
	n.mu.Unlock()
	if n.t.Failed() && !printed {
		n.t.Logf("nsqdtest: last %d lines of the nsqd log:\n%s", len(lines), tail)
	}
}

// TopicStats is a subset of the statistics nsqd reports for a topic.
type TopicStats struct {
	// Depth is the number of messages queued in the topic itself (in
	// memory and on disk), not yet copied to its channels. A topic without
	// channels keeps every message it receives.
	Depth int64
	// MessageCount is the number of messages published to the topic since
	// nsqd started (the counter is not persisted across restarts).
	MessageCount int64
	// MessageBytes is the total size of the bodies of those messages.
	MessageBytes int64
	// ChannelDepth is the number of messages held by the topic's channels:
	// queued, in flight or deferred.
	ChannelDepth int64
}

// Stats returns the statistics of topic from nsqd's
// GET /stats?format=json&topic=<topic> endpoint. If the topic does not
// exist, it returns zero stats and a nil error.
func (n *Nsqd) Stats(topic string) (TopicStats, error) {
	q := url.Values{
		"format":          {"json"},
		"topic":           {topic},
		"include_clients": {"false"},
		"include_mem":     {"false"},
	}
	u := "http://" + n.HTTPAddr() + "/stats?" + q.Encode()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return TopicStats{}, fmt.Errorf("nsqdtest: stats: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return TopicStats{}, fmt.Errorf("nsqdtest: stats: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return TopicStats{}, fmt.Errorf("nsqdtest: stats: %s: %s", resp.Status, body)
	}
	// nsqd v1.3.0 returns the object without a {"data": ...} envelope.
	var stats struct {
		Topics []struct {
			TopicName    string `json:"topic_name"`
			Depth        int64  `json:"depth"`
			MessageCount int64  `json:"message_count"`
			MessageBytes int64  `json:"message_bytes"`
			Channels     []struct {
				Depth         int64 `json:"depth"`
				InFlightCount int64 `json:"in_flight_count"`
				DeferredCount int64 `json:"deferred_count"`
			} `json:"channels"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(body, &stats); err != nil {
		return TopicStats{}, fmt.Errorf("nsqdtest: stats: decoding %q: %w", body, err)
	}
	for _, t := range stats.Topics {
		if t.TopicName == topic {
			st := TopicStats{Depth: t.Depth, MessageCount: t.MessageCount, MessageBytes: t.MessageBytes}
			for _, c := range t.Channels {
				st.ChannelDepth += c.Depth + c.InFlightCount + c.DeferredCount
			}
			return st, nil
		}
	}
	return TopicStats{}, nil
}

// current returns the process of the latest run, or nil.
func (n *Nsqd) current() *process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

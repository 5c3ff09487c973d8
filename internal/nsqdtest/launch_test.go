package nsqdtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// useTempDir points os.TempDir, and so Launch's os.MkdirTemp, at a fresh
// directory, so a test can see what Launch leaves behind. The nsqd binary
// is located first: Binary caches it under os.TempDir.
func useTempDir(t *testing.T) string {
	t.Helper()
	if _, err := Binary(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	return dir
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// dataPath returns the --data-path nsqd was started with.
func dataPath(t *testing.T, n *Nsqd) string {
	t.Helper()
	for _, a := range n.args {
		if p, ok := strings.CutPrefix(a, "--data-path="); ok {
			return p
		}
	}
	t.Fatalf("no --data-path in %q", n.args)
	return ""
}

func exited(n *Nsqd) bool {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func TestLaunch(t *testing.T) {
	tmp := useTempDir(t)
	n, err := Launch()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close() // in case the test fails early

	if !strings.HasPrefix(n.TCPAddr(), "127.0.0.1:") || strings.HasSuffix(n.TCPAddr(), ":0") {
		t.Fatalf("TCPAddr = %q", n.TCPAddr())
	}
	if !strings.HasPrefix(n.HTTPAddr(), "127.0.0.1:") || n.HTTPAddr() == n.TCPAddr() {
		t.Fatalf("HTTPAddr = %q", n.HTTPAddr())
	}
	if !strings.Contains(n.Log(), "--log-level=info") {
		t.Errorf("nsqd not started with Start's default --log-level=info:\n%s", n.Log())
	}
	data := dataPath(t, n)
	if filepath.Dir(data) != tmp {
		t.Fatalf("data path %q is not in os.TempDir() %q", data, tmp)
	}
	if _, err := os.Stat(data); err != nil {
		t.Fatal(err)
	}

	c := dialV2(t, n.TCPAddr())
	c.pub("launch", "hello")
	st, err := n.Stats("launch")
	if err != nil {
		t.Fatal(err)
	}
	if st.MessageCount != 1 {
		t.Fatalf("MessageCount = %d, want 1", st.MessageCount)
	}

	n.Close()
	if !exited(n) {
		t.Fatal("nsqd still running after Close")
	}
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Fatalf("left in os.TempDir() after Close: %q", names)
	}
	n.Close() // a second Close does nothing
}

func TestLaunchRestart(t *testing.T) {
	n, err := Launch()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	addr := n.TCPAddr()
	dialV2(t, addr).pub("launch", "kept")
	n.Restart()
	if n.TCPAddr() != addr {
		t.Fatalf("TCPAddr after Restart = %q, want %q", n.TCPAddr(), addr)
	}
	// The graceful stop flushed the message to the data path, which
	// Restart reused.
	msgs := n.Consume(t, "launch", 1, 10*time.Second)
	if string(msgs[0].Body) != "kept" {
		t.Fatalf("body = %q, want %q", msgs[0].Body, "kept")
	}
}

func TestLaunchOwnDataPath(t *testing.T) {
	tmp := useTempDir(t)
	data := t.TempDir()
	n, err := Launch("--data-path", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := dataPath(t, n); got != data {
		t.Fatalf("data path = %q, want %q", got, data)
	}
	n.Close()
	if !exited(n) {
		t.Fatal("nsqd still running after Close")
	}
	if _, err := os.Stat(data); err != nil {
		t.Fatalf("Close removed the caller's data path: %v", err)
	}
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Fatalf("left in os.TempDir(): %q", names)
	}
}

func TestLaunchErrors(t *testing.T) {
	tmp := useTempDir(t)
	for _, tc := range []struct {
		args []string
		want []string // in the error
	}{
		// Refused by the argument checks Launch shares with Start.
		{[]string{"--log-level=warn"}, []string{"--log-level=warn hides the readiness log lines"}},
		// nsqd itself exits.
		{[]string{"--no-such-flag"}, []string{"nsqd exited before it was ready", "nsqd log:", "no-such-flag"}},
	} {
		n, err := Launch(tc.args...)
		if err == nil {
			n.Close()
			t.Errorf("Launch(%q) succeeded", tc.args)
			continue
		}
		if n != nil {
			t.Errorf("Launch(%q) returned an Nsqd with its error", tc.args)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Launch(%q) error does not contain %q:\n%v", tc.args, w, err)
			}
		}
	}
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Fatalf("left in os.TempDir() after failed launches: %q", names)
	}
}

func TestCloseAfterStart(t *testing.T) {
	t.Parallel()
	n := Start(t)
	n.Close()
	if !exited(n) {
		t.Fatal("nsqd still running after Close")
	}
}

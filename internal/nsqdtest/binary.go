// Package nsqdtest provides helpers for testing against a real nsqd process.
//
// The nsqd binary is built from github.com/nsqio/nsq/apps/nsqd at
// NsqdVersion using the nested module in ../nsqdbin, so that the root module
// does not need to require github.com/nsqio/nsq. See Binary.
//
// nsqlookupd is built the same way (LookupdBinary) and started by
// StartLookupd; Nsqd.Pause and Resume freeze a process with SIGSTOP.
//
// Besides starting and controlling nsqd (Start, Nsqd), the package offers a
// minimal raw-protocol consumer (Nsqd.Consume), TLS certificate generation
// (GenCerts), a fake nsqd auth server (AuthServer) and a TCP proxy that can
// cut connections on demand (NewProxy).
//
// The package only depends on the standard library so that it can be used
// by the root module's tests and, through a replace directive, by nested
// modules such as bench/ and examples/.
package nsqdtest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// NsqdVersion is the nsqd version that Binary builds.
const NsqdVersion = "v1.3.0"

// nsqdPackage is the import path of nsqd's main package.
const nsqdPackage = "github.com/nsqio/nsq/apps/nsqd"

// nsqlookupdPackage is the import path of nsqlookupd's main package, built
// from the same module version as nsqd.
const nsqlookupdPackage = "github.com/nsqio/nsq/apps/nsqlookupd"

var (
	binOnce sync.Once
	binPath string
	binErr  error

	lookupdBinOnce sync.Once
	lookupdBinPath string
	lookupdBinErr  error
)

// Binary returns the path of an nsqd NsqdVersion executable.
//
// If the NSQD_BIN environment variable is set, its value is returned as is
// (after checking that the file exists). Otherwise the binary is built once
// per process, by running
//
//	go build -o <tmp> github.com/nsqio/nsq/apps/nsqd
//
// in the internal/nsqdbin module directory (located relative to this source
// file) and renaming the result to a stable path under os.TempDir()
// (nsqkit-nsqd-v1.3.0/nsqd). Building to a temporary name and renaming it
// into place lets parallel test processes build concurrently without
// racing. Rebuilding in every process is cheap: the Go build cache holds
// the compiled packages, and the previous binary is copied in first so that
// go build can see it is up to date and skip the link (about 0.3s in all).
// The very first build compiles nsqd and its dependencies (about 30s).
//
// The build runs with GOWORK=off so that a go.work file in a parent
// directory does not affect it.
func Binary() (string, error) {
	binOnce.Do(func() {
		binPath, binErr = findOrBuildBinary("NSQD_BIN", nsqdPackage, "nsqd")
	})
	return binPath, binErr
}

// LookupdBinary returns the path of an nsqlookupd NsqdVersion executable,
// built like Binary's nsqd (from github.com/nsqio/nsq/apps/nsqlookupd, same
// module and version), or taken from the NSQLOOKUPD_BIN environment
// variable when it is set.
func LookupdBinary() (string, error) {
	lookupdBinOnce.Do(func() {
		lookupdBinPath, lookupdBinErr = findOrBuildBinary("NSQLOOKUPD_BIN", nsqlookupdPackage, "nsqlookupd")
	})
	return lookupdBinPath, lookupdBinErr
}

// findOrBuildBinary returns $env when set, else builds pkg as name.
func findOrBuildBinary(env, pkg, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("nsqdtest: %s: %w", env, err)
		}
		return p, nil
	}

	modDir, err := nsqdbinDir()
	if err != nil {
		return "", err
	}

	cacheDir := filepath.Join(os.TempDir(), "nsqkit-nsqd-"+NsqdVersion)
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("nsqdtest: %w", err)
	}
	// Build into a private directory inside cacheDir (same file system), so
	// the final os.Rename is atomic and concurrent builders never see or
	// overwrite each other's partial output.
	tmpDir, err := os.MkdirTemp(cacheDir, "build-")
	if err != nil {
		return "", fmt.Errorf("nsqdtest: %w", err)
	}
	defer os.RemoveAll(tmpDir)

	exe := name
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	tmp := filepath.Join(tmpDir, exe)
	final := filepath.Join(cacheDir, exe)
	// Seed the build with the previous binary: if it is up to date, go
	// build recognizes its build ID and skips relinking (~0.2s instead of
	// ~1s). A failed copy only costs the relink.
	_ = copyFile(final, tmp)
	cmd := exec.Command("go", "build", "-o", tmp, pkg)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("nsqdtest: building %s in %s: %v\n%s", name, modDir, err, out)
	}

	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("nsqdtest: %w", err)
	}
	return final, nil
}

// copyFile copies the executable src to dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(dst)
		return err
	}
	return nil
}

// nsqdbinDir returns the directory of the internal/nsqdbin module, found
// relative to this source file.
func nsqdbinDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("nsqdtest: cannot locate source file; set NSQD_BIN")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "nsqdbin")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("nsqdtest: cannot find the nsqdbin module (built with -trimpath?); set NSQD_BIN: %w", err)
	}
	return dir, nil
}

// Package nsqdbin is an empty package. Its module exists only to pin and
// build the real nsqd v1.3.0 (github.com/nsqio/nsq/apps/nsqd, declared as a
// tool in go.mod) for the tests and benchmarks of github.com/nsqkit/go-nsq,
// so that the root module's go.mod does not have to require
// github.com/nsqio/nsq and its dependencies.
//
// Build the binary from this directory with:
//
//	go build -o /tmp/nsqd github.com/nsqio/nsq/apps/nsqd
//
// or run it directly with `go tool nsqd`. The test helpers in
// github.com/nsqkit/go-nsq/internal/nsqdtest do the former automatically.
package nsqdbin

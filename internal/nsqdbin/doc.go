// Package nsqdbin is an empty package. Its module exists only to pin and
// build the real nsqd and nsqlookupd v1.3.0 (github.com/nsqio/nsq/apps/nsqd
// and apps/nsqlookupd, from the same module version, declared as tools in
// go.mod) for the tests and benchmarks of github.com/nsqkit/go-nsq, so that
// the root module's go.mod does not have to require github.com/nsqio/nsq and
// its dependencies.
//
// Build the binaries from this directory with:
//
//	go build -o /tmp/nsqd github.com/nsqio/nsq/apps/nsqd
//	go build -o /tmp/nsqlookupd github.com/nsqio/nsq/apps/nsqlookupd
//
// or run them directly with `go tool nsqd` and `go tool nsqlookupd`. The test
// helpers in github.com/nsqkit/go-nsq/internal/nsqdtest do the former
// automatically.
package nsqdbin

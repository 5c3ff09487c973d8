// Package compat holds the side-by-side tests of this library and go-nsq
// v1.1.0: the same inputs given to both, the outputs compared. It is a
// nested module so that the library's go.mod does not require go-nsq.
//
//	go -C internal/compat test -race -count=1 ./...
package compat

module github.com/nsqkit/go-nsq/bench

go 1.26

require (
	github.com/nsqio/go-nsq v1.1.0
	github.com/nsqkit/go-nsq v0.0.0-00010101000000-000000000000
)

require github.com/golang/snappy v1.0.0 // indirect

replace github.com/nsqkit/go-nsq => ../

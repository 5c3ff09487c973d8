module github.com/nsqkit/go-nsq/examples

go 1.26

require (
	github.com/nsqio/nsq v1.3.0
	github.com/nsqkit/go-nsq v0.0.0-00010101000000-000000000000
)

require (
	github.com/blang/semver v3.5.1+incompatible // indirect
	github.com/bmizerany/perks v0.0.0-20141205001514-d9a9656a3a4b // indirect
	github.com/golang/snappy v1.0.0 // indirect
	github.com/julienschmidt/httprouter v1.3.0 // indirect
	github.com/nsqio/go-diskqueue v1.1.0 // indirect
	github.com/nsqio/go-nsq v1.1.0 // indirect
)

replace github.com/nsqkit/go-nsq => ../

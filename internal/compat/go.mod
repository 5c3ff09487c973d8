module github.com/nsqkit/go-nsq/internal/compat

go 1.26

require (
	github.com/nsqio/go-nsq v1.1.0
	github.com/nsqkit/go-nsq v0.0.0-00010101000000-000000000000
	github.com/stretchr/testify v1.12.1
)

require (
	github.com/golang/snappy v1.0.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)

replace github.com/nsqkit/go-nsq => ../..

package nsq

// VERSION is the version of this library. It names the library in the
// user_agent sent to nsqd by default ("nsqkit-go-nsq/" + VERSION).
const VERSION = "0.1.0"

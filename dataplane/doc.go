// Package dataplane will hold the Kafka-protocol data-plane node (gregor-dp): a gnet
// event-loop server that decodes requests with proto, appends produced batches to
// segment logs, serves fetches zero-copy through sendfile, parks delayed produce and
// fetch requests in purgatories, and runs the replication fetchers. It talks to the
// control plane only through a small interface that cmd/dp satisfies with
// controlplane/client. Handler files are named by API key (00_produce.go, 01_fetch.go, …).
//
// Nothing lives here yet: the data-plane issue builds it on top of segment and proto.
package dataplane

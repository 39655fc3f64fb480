// Package containertest runs ExactOnce as three Docker containers (compose
// file deploy/docker-compose.yml) and checks what users rely on when a node is
// killed, cut off the network, or the whole cluster restarts.
//
// The tests are behind the build tag "container" and need a Docker engine
// with docker-compose; run them with `make test-cluster`.
package containertest

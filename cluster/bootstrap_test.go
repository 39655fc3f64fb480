package cluster

import (
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestBootstrapCandidates: a fresh node bootstraps only with exactly
// BootstrapExpect alive members, none holding state, and every node
// computes the same sorted configuration.
func TestBootstrapCandidates(t *testing.T) {
	newNode := func(id string) *Node {
		_, tr := raft.NewInmemTransport(raft.ServerAddress("addr-" + id))
		return &Node{cfg: Config{NodeID: id, BootstrapExpect: 3}, nodeID: raft.ServerID(id), members: newMemberTable(), transport: tr}
	}
	put := func(n *Node, id string, state bool, health string) {
		n.members.put(member{memberMeta: memberMeta{ID: id, Raft: "addr-" + id, HTTP: "http://" + id, State: state}, Gossip: health})
	}

	n := newNode("n2")
	put(n, "n3", false, gossipAlive)
	if _, why := n.bootstrapCandidates(); !strings.Contains(why, "waiting for 3 members, seen 2") {
		t.Fatalf("two of three: why = %q", why)
	}
	put(n, "n4", false, gossipGone)
	if _, why := n.bootstrapCandidates(); why == "" {
		t.Fatal("a gone member must not count")
	}
	put(n, "n1", false, gossipAlive)
	servers, why := n.bootstrapCandidates()
	if why != "" || len(servers) != 3 {
		t.Fatalf("three fresh members: servers %v, why %q", servers, why)
	}

	// The configuration written is identical whichever node computes it.
	other := newNode("n3")
	put(other, "n1", false, gossipAlive)
	put(other, "n2", false, gossipAlive)
	s2, _ := other.bootstrapCandidates()
	if got, want := sortedServers(servers), sortedServers(s2); got != want {
		t.Fatalf("configurations differ: %s vs %s", got, want)
	}

	put(n, "n5", false, gossipAlive)
	if _, why := n.bootstrapCandidates(); !strings.Contains(why, "more than bootstrap-expect") {
		t.Fatalf("four fresh members: why = %q", why)
	}
	n.members = newMemberTable()
	put(n, "n1", true, gossipAlive)
	put(n, "n3", false, gossipAlive)
	if _, why := n.bootstrapCandidates(); !strings.Contains(why, "already holds raft state") {
		t.Fatalf("member with state: why = %q", why)
	}
}

func sortedServers(s []raft.Server) string {
	s = sortServers(s)
	var b strings.Builder
	for _, x := range s {
		b.WriteString(string(x.ID) + "@" + string(x.Address) + ",")
	}
	return b.String()
}

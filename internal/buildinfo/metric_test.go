package buildinfo

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollector(t *testing.T) {
	info := Info{Version: "v1.2.3", Revision: "0123abcd", GoVersion: "go1.26.8"}
	want := `# HELP exactonce_build_info Always 1; the labels tell the build of this node: version, goversion and revision.
# TYPE exactonce_build_info gauge
exactonce_build_info{goversion="go1.26.8",revision="0123abcd",version="v1.2.3"} 1
`
	if err := testutil.CollectAndCompare(Collector(info), strings.NewReader(want), "exactonce_build_info"); err != nil {
		t.Error(err)
	}
}

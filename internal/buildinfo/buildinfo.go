// Package buildinfo tells which build of ExactOnce is running: the version,
// the commit it was built from and the Go release that built it. The
// server shows it in `exactonced --version`, GET /v1/cluster and the
// exactonce_build_info metric; the CLI in `exactonce version`.
//
// The Makefile's build target sets the version and revision with
//
//	-ldflags "-X github.com/exactonce/exactonce/internal/buildinfo.version=v1.2.3
//	          -X github.com/exactonce/exactonce/internal/buildinfo.revision=<commit>"
//
// A plain `go build` or `go install` falls back to what the Go toolchain
// stamps into the binary (runtime/debug.ReadBuildInfo: the module version
// and the VCS revision), and to "dev" and "unknown" when there is none.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and revision are set by the linker (-X); they are the only
// package-level variables, because -X can set nothing else.
var (
	version  string
	revision string
)

// Fallbacks when neither the linker nor the toolchain says.
const (
	DevVersion      = "dev"
	UnknownRevision = "unknown"
)

// Info describes one build.
type Info struct {
	// Version is the release (a git tag such as v1.2.3, or what `git
	// describe` gives between tags), or "dev".
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from, with
	// "-dirty" when the work tree had changes, or "unknown".
	Revision string `json:"revision"`
	// GoVersion is the Go release that built the binary (go1.26.8).
	GoVersion string `json:"goVersion"`
}

// String renders the info on one line: "v1.2.3 (revision abc123, go1.26.8)".
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", i.Version, i.Revision, i.GoVersion)
}

// Get returns this binary's build info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, revision, bi)
}

// resolve prefers the linker's values, then the toolchain's stamp, then
// the fallbacks. It is Get without the process state, for tests.
func resolve(ldVersion, ldRevision string, bi *debug.BuildInfo) Info {
	info := Info{Version: ldVersion, Revision: ldRevision, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Revision == "" {
			var rev string
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if rev != "" && modified {
				rev += "-dirty"
			}
			info.Revision = rev
		}
	}
	if info.Version == "" {
		info.Version = DevVersion
	}
	if info.Revision == "" {
		info.Revision = UnknownRevision
	}
	return info
}

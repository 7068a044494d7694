// Package version holds the build version of the anyedge binaries.
//
// It is a variable rather than a constant so that the Makefile can stamp it
// at link time:
//
//	go build -ldflags "-X github.com/anyedge/anyedge/internal/version.Version=$(git describe --always --dirty)"
package version

// Version is the build version; "dev" for builds that were not stamped.
var Version = "dev"

//go:build tools

// Package tools pins the prometheus and promtool commands this module builds (see ../build).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)

// Package web holds the project server's web UI as files: html/template pages under
// templates/ and hand-written CSS, JavaScript and SVG under static/. It is embedded
// into the project-server binary; project-server/internal/webui renders and serves it.
// Nothing here is fetched from elsewhere at run time.
package web

import "embed"

// FS holds templates/*.html and static/*.
//
//go:embed templates/*.html static/*
var FS embed.FS

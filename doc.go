// Package texgrid is a volunteer desktop grid that trains texture-classification CNNs:
// a dataset FTP store (dataset-ftp), a project server that schedules work units and
// averages weight deltas in rounds (project-server), volunteer clients that train on
// borrowed machines (volunteer-client), and the CNN engine they share (trainer).
//
// This root package holds no code; its tests enforce the import rules written down in
// ARCHITECTURE.md.
package texgrid

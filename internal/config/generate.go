package config

// docs/CONFIG.md, the reference of every key, is generated from the
// Config structs and their doc comments.
//go:generate go run ./gendoc -out ../../docs/CONFIG.md

"""The gate: what is installed, what it is, and whether it may be loaded.

Data flows through it one way: `discovery` lists the entry points of the plugin group
without importing anything; `fingerprint` hashes a distribution's installed files (or a
wheel's); `resolution` checks that `import` would run exactly those files; `startup`
reports the `.pth` files that run at interpreter start; `decide` compares all that with
the allowlist and gives each plugin a verdict; `loader` imports only what passed, with
stevedore. `signing` verifies publishers' signatures of wheels; `sitewatch` stamps the
installed distributions for `[plugins] auto_reload`.
"""

"""How hooks run: the executor interface and the in-process executor (`executor`), and the
sandbox, where approved plugins with mode "sandbox" run in their own confined worker
process: the pool of workers (`pool`), the walls around a worker (`outer`) and the layers
it applies to itself (`inner`, `policy`, `layers`), how one starts (`start`, `scratch`,
`bytecode`) and what it does (`worker`, `protocol`, `admission`).

Kept free of imports: a worker imports `dihya.sandbox.worker` before it is confined.
"""

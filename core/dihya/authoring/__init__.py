"""For plugin authors and for installing what they publish: the project scaffold
(`dihya plugins new`), the generated hooks and needs references, and the install of a
wheel with its checks (`dihya plugins install`)."""

//! Git adapter (being written): poll a remote or watch a local repository, snapshot a commit's
//! tree as a `FileTree`, read/write/push notes.

//! Run one command anywhere and keep control of it: launch, attach, layers.

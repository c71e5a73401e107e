pub mod block;
pub mod faults;
pub mod futex;
pub mod lifecycle;
pub mod oom;
pub mod rss;
pub mod writes;

//! Data in and out of files: the one file-access check, COPY's and the
//! loader's formats, and the `read_*` table functions.

pub(crate) mod access;
pub(crate) mod copy;
pub(crate) mod load;
pub(crate) mod readfile;

//! The small HTTP service stackproof deploys by default: reports its AZ and task, burns CPU on request.

//! MODE SENSE(6)/(10) (SPC-4 6.11, 6.12) and MODE SELECT(6)/(10) (SPC-4 6.9, 6.10) for
//! two mode pages: Caching (SBC-3 6.4.5; WCE changeable) and Control (SPC-4 7.5.8; SWP
//! changeable). The mode parameter header (SPC-4 7.5.4) carries the SBC device-specific
//! parameter (SBC-3 6.4.1): WP when SWP is set, and DPOFUA, since DPO and FUA are
//! honoured. Parameters cannot be saved.

use std::sync::atomic::Ordering;

use super::opcodes::op;
use super::sense::{asc, key, Check};
use super::{be16, truncate, LogicalUnit, ScsiTask};

const PAGE_CACHING: u8 = 0x08;
const PAGE_CONTROL: u8 = 0x0a;
const ALL_PAGES: u8 = 0x3f;
const ALL_SUBPAGES: u8 = 0xff;

/// Page control (CDB byte 2, bits 7-6).
const PC_CURRENT: u8 = 0;
const PC_CHANGEABLE: u8 = 1;
const PC_DEFAULT: u8 = 2;

/// Caching page: WCE is byte 2 bit 2.
const WCE: u8 = 0x04;
/// Control page: SWP is byte 4 bit 3.
const SWP: u8 = 0x08;

/// The device-specific parameter bits (SBC-3 6.4.1).
const DEVICE_SPECIFIC_WP: u8 = 0x80;
const DEVICE_SPECIFIC_DPOFUA: u8 = 0x10;

#[derive(Clone, Copy)]
struct PageValues {
    write_cache: bool,
    software_write_protect: bool,
}

fn caching_page(values: PageValues, changeable: bool) -> Vec<u8> {
    let mut page = vec![0u8; 20];
    page[0] = PAGE_CACHING;
    page[1] = 0x12;
    if changeable || values.write_cache {
        page[2] |= WCE;
    }
    page
}

fn control_page(values: PageValues, changeable: bool) -> Vec<u8> {
    let mut page = vec![0u8; 12];
    page[0] = PAGE_CONTROL;
    page[1] = 0x0a;
    if changeable {
        page[4] = SWP;
        return page;
    }
    page[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering allowed
    if values.software_write_protect {
        page[4] |= SWP;
    }
    page[8..10].copy_from_slice(&0xffffu16.to_be_bytes()); // BUSY TIMEOUT PERIOD: unlimited
    page
}

fn page_for(code: u8, values: PageValues, changeable: bool) -> Option<Vec<u8>> {
    match code {
        PAGE_CACHING => Some(caching_page(values, changeable)),
        PAGE_CONTROL => Some(control_page(values, changeable)),
        _ => None,
    }
}

/// The bits MODE SELECT may change, per page byte.
fn changeable_mask(code: u8) -> Option<Vec<u8>> {
    let values = PageValues {
        write_cache: false,
        software_write_protect: false,
    };
    page_for(code, values, true).map(|mut page| {
        page[0] = 0;
        page[1] = 0;
        page
    })
}

impl LogicalUnit {
    fn current_values(&self) -> PageValues {
        PageValues {
            write_cache: self.write_cache_enabled(),
            software_write_protect: self.write_protected(),
        }
    }

    pub(super) fn mode_sense(&self, cdb: &[u8]) -> Result<Vec<u8>, Check> {
        let six = cdb[0] == op::MODE_SENSE_6;
        let disable_block_descriptors = cdb[1] & 0x08 != 0;
        let long_lba = !six && cdb[1] & 0x10 != 0;
        let page_control = cdb[2] >> 6;
        let page_code = cdb[2] & 0x3f;
        let subpage = cdb[3];
        let allocation_length = if six {
            usize::from(cdb[4])
        } else {
            usize::from(be16(cdb, 7))
        };
        let values = match page_control {
            PC_CURRENT => self.current_values(),
            PC_CHANGEABLE => self.current_values(),
            PC_DEFAULT => PageValues {
                write_cache: self.config.write_cache,
                software_write_protect: false,
            },
            _ => {
                let mut check =
                    Check::new(key::ILLEGAL_REQUEST, asc::SAVING_PARAMETERS_NOT_SUPPORTED);
                check.field = Check::invalid_cdb_field(2, Some(7)).field;
                return Err(check);
            }
        };
        let changeable = page_control == PC_CHANGEABLE;
        let mut pages = Vec::new();
        match (page_code, subpage) {
            (ALL_PAGES, 0 | ALL_SUBPAGES) => {
                for code in [PAGE_CACHING, PAGE_CONTROL] {
                    pages.extend(page_for(code, values, changeable).unwrap_or_default());
                }
            }
            (code, 0) => match page_for(code, values, changeable) {
                Some(page) => pages = page,
                None => return Err(Check::invalid_cdb_field(2, Some(5))),
            },
            _ => return Err(Check::invalid_cdb_field(3, None)),
        }

        let mut device_specific = DEVICE_SPECIFIC_DPOFUA;
        if self.write_protected() {
            device_specific |= DEVICE_SPECIFIC_WP;
        }
        let block_descriptor = if disable_block_descriptors {
            Vec::new()
        } else if long_lba {
            let mut descriptor = vec![0u8; 16];
            descriptor[..8].copy_from_slice(&self.blocks().to_be_bytes());
            descriptor[12..16].copy_from_slice(&self.config.block_size.to_be_bytes());
            descriptor
        } else {
            let mut descriptor = vec![0u8; 8];
            let blocks = u32::try_from(self.blocks()).unwrap_or(u32::MAX);
            descriptor[..4].copy_from_slice(&blocks.to_be_bytes());
            descriptor[5..8].copy_from_slice(&self.config.block_size.to_be_bytes()[1..]);
            descriptor
        };
        let mut data = Vec::with_capacity(8 + block_descriptor.len() + pages.len());
        if six {
            let total = 4 + block_descriptor.len() + pages.len();
            data.push((total - 1) as u8);
            data.push(0); // MEDIUM TYPE
            data.push(device_specific);
            data.push(block_descriptor.len() as u8);
        } else {
            let total = 8 + block_descriptor.len() + pages.len();
            data.extend_from_slice(&((total - 2) as u16).to_be_bytes());
            data.push(0);
            data.push(device_specific);
            data.push(u8::from(long_lba && !block_descriptor.is_empty()));
            data.push(0);
            data.extend_from_slice(&(block_descriptor.len() as u16).to_be_bytes());
        }
        data.extend_from_slice(&block_descriptor);
        data.extend_from_slice(&pages);
        Ok(truncate(data, allocation_length))
    }

    pub(super) fn mode_select(&self, task: &ScsiTask) -> Result<Vec<u8>, Check> {
        let cdb = task.cdb;
        let six = cdb[0] == op::MODE_SELECT_6;
        let list_length = if six {
            usize::from(cdb[4])
        } else {
            usize::from(be16(cdb, 7))
        };
        if list_length == 0 {
            return Ok(Vec::new());
        }
        let length_error = || Check::new(key::ILLEGAL_REQUEST, asc::PARAMETER_LIST_LENGTH_ERROR);
        let list = task.data_out.get(..list_length).ok_or_else(length_error)?;
        let header_length = if six { 4 } else { 8 };
        if list.len() < header_length {
            return Err(length_error());
        }
        let descriptors_length = if six {
            usize::from(list[3])
        } else {
            usize::from(be16(list, 6))
        };
        let long_lba = !six && list[4] & 0x01 != 0;
        let descriptor_size = if long_lba { 16 } else { 8 };
        let pages_start = header_length + descriptors_length;
        if pages_start > list.len() {
            return Err(length_error());
        }
        if descriptors_length % descriptor_size != 0 {
            return Err(Check::invalid_parameter(if six { 3 } else { 6 } as u16));
        }
        // A block descriptor may restate the block length, never change it.
        for start in (header_length..pages_start).step_by(descriptor_size) {
            let length_at = if long_lba { start + 12 } else { start + 5 };
            let block_length = if long_lba {
                super::be32(list, length_at)
            } else {
                u32::from_be_bytes([0, list[length_at], list[length_at + 1], list[length_at + 2]])
            };
            if block_length != 0 && block_length != self.config.block_size {
                return Err(Check::invalid_parameter(length_at as u16));
            }
        }

        let current = self.current_values();
        let mut staged = current;
        let mut at = pages_start;
        // Each pass consumes at least two bytes, so the loop ends.
        while at < list.len() {
            let header = list.get(at..at + 2).ok_or_else(length_error)?;
            let code = header[0] & 0x3f;
            if header[0] & 0x40 != 0 {
                // SPF: no subpages here.
                return Err(Check::invalid_parameter(at as u16));
            }
            let ours = page_for(code, current, false).ok_or(Check::invalid_parameter(at as u16))?;
            let mask = changeable_mask(code).unwrap_or_default();
            if usize::from(header[1]) != ours.len() - 2 {
                return Err(Check::invalid_parameter(at as u16 + 1));
            }
            let sent = list.get(at..at + ours.len()).ok_or_else(length_error)?;
            for index in 2..ours.len() {
                let fixed = !mask.get(index).copied().unwrap_or(0);
                if (sent[index] ^ ours[index]) & fixed != 0 {
                    return Err(Check::invalid_parameter((at + index) as u16));
                }
            }
            match code {
                PAGE_CACHING => staged.write_cache = sent[2] & WCE != 0,
                PAGE_CONTROL => staged.software_write_protect = sent[4] & SWP != 0,
                _ => {}
            }
            at += ours.len();
        }
        if staged.write_cache != current.write_cache && !staged.write_cache {
            // Turning the write cache off: what it holds becomes durable first.
            self.backend
                .flush()
                .map_err(|error| super::medium_error(error, true))?;
        }
        self.write_cache
            .store(staged.write_cache, Ordering::Relaxed);
        self.software_write_protect
            .store(staged.software_write_protect, Ordering::Relaxed);
        Ok(Vec::new())
    }
}
